//! The built-in filters whose arguments make their output grow without bound, replaced
//! by versions that refuse such arguments before they run: fuel counts instructions,
//! not bytes.

use std::fmt::{self, Write as _};

use minijinja::value::{Kwargs, Rest, StringInput, ValueKind, ValueOrKwargs};
use minijinja::{Error, ErrorKind, State, Value as Scope, filters};

use super::memory::{MAX_RENDERED_BYTES, Measure};

/// Widest indentation `indent` and `tojson` accept, and widest field or precision of a
/// `format` conversion.
pub const MAX_PADDING: usize = 256;
/// Most groups `batch` and `slice` may make.
pub const MAX_GROUPS: usize = 10_000;

fn over_limit(what: &str, value: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} is {value}, over the limit of {limit}"),
    )
}

/// The width `indent` indents by when given none.
const DEFAULT_INDENT: usize = 4;

pub(super) fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Scope, Error> {
    let requested = match width {
        Some(width) => Some(width),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    if let Some(width) = requested.filter(|&width| width > MAX_PADDING) {
        return Err(over_limit("the indent width", width, MAX_PADDING));
    }
    let text = value.as_str();
    let lines = text.bytes().filter(|&byte| byte == b'\n').count() + 1;
    let size = text
        .len()
        .saturating_add(lines.saturating_mul(requested.unwrap_or(DEFAULT_INDENT)));
    if size > MAX_RENDERED_BYTES {
        return Err(over_limit(
            "the indented text's size in bytes",
            size,
            MAX_RENDERED_BYTES,
        ));
    }
    filters::indent(value, width, first, blank, kwargs)
}

pub(super) fn tojson(value: &Scope, indent: Option<Scope>, kwargs: Kwargs) -> Result<Scope, Error> {
    let requested = match &indent {
        Some(indent) => Some(indent.clone()),
        None => kwargs.peek::<Option<Scope>>("indent")?,
    };
    let width = match requested {
        Some(flag) if flag.kind() == ValueKind::Bool => flag.is_true().then_some(2),
        Some(width) => width.as_usize(),
        None => None,
    };
    if let Some(width) = width {
        if width > MAX_PADDING {
            return Err(over_limit("the indent width", width, MAX_PADDING));
        }
        // Each line is indented as deep as it nests: far more than the value takes.
        let spaces = vec![b' '; width];
        let fits = Measure::of(MAX_RENDERED_BYTES, |measure| {
            let mut json = serde_json::Serializer::with_formatter(
                &mut *measure,
                serde_json::ser::PrettyFormatter::with_indent(&spaces),
            );
            serde::Serialize::serialize(value, &mut json).map_err(|_| fmt::Error)
        });
        if fits.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the indented JSON text is over {MAX_RENDERED_BYTES} bytes, the limit; indent less"
                ),
            ));
        }
    }
    filters::tojson(value, indent, kwargs)
}

/// `pprint` indents each line as deep as it nests, like an indented `tojson`.
pub(super) fn pprint(value: &Scope) -> Result<String, Error> {
    if Measure::of(MAX_RENDERED_BYTES, |measure| write!(measure, "{value:#?}")).is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the printed value is over {MAX_RENDERED_BYTES} bytes, the limit"),
        ));
    }
    Ok(filters::pprint(value))
}

pub(super) fn format(
    state: &mut State,
    format_str: &Scope,
    args: Rest<ValueOrKwargs>,
) -> Result<Scope, Error> {
    if let Some(text) = format_str.as_str() {
        let padding = conversion_widths(text);
        if let Some(widest) = padding.widest.filter(|&widest| widest > MAX_PADDING) {
            return Err(over_limit(
                "a conversion's width or precision",
                widest,
                MAX_PADDING,
            ));
        }
        if padding.total > MAX_RENDERED_BYTES {
            return Err(over_limit(
                "the conversions' widths and precisions in all",
                padding.total,
                MAX_RENDERED_BYTES,
            ));
        }
    }
    filters::format(state, format_str, args)
}

/// The widths and precisions of a printf-style format string's conversions.
#[derive(Debug, PartialEq, Eq)]
struct ConversionWidths {
    /// The largest (`%-10.3f` → 10).
    widest: Option<usize>,
    /// All of them added up, saturating: what a text full of conversions pads to.
    total: usize,
}

fn conversion_widths(text: &str) -> ConversionWidths {
    let bytes = text.as_bytes();
    let mut widths = ConversionWidths {
        widest: None,
        total: 0,
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        if bytes.get(i) == Some(&b'%') {
            i += 1;
            continue;
        }
        while bytes.get(i).is_some_and(|b| b"-+ #0".contains(b)) {
            i += 1;
        }
        loop {
            let mut number: usize = 0;
            let mut digits = false;
            while let Some(digit) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
                number = number
                    .saturating_mul(10)
                    .saturating_add(usize::from(digit - b'0'));
                digits = true;
                i += 1;
            }
            if digits {
                widths.widest = Some(widths.widest.map_or(number, |w: usize| w.max(number)));
                widths.total = widths.total.saturating_add(number);
            }
            if bytes.get(i) == Some(&b'.') {
                i += 1;
            } else {
                break;
            }
        }
    }
    widths
}

pub(super) fn replace(
    state: &mut State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Scope, Error> {
    let (text, pattern) = (value.as_str(), from.as_str());
    let matches = if pattern.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(pattern).count()
    };
    let size = (text.len() - matches * pattern.len())
        .saturating_add(matches.saturating_mul(to.as_str().len()));
    if size > MAX_RENDERED_BYTES {
        return Err(over_limit(
            "the replaced text's size in bytes",
            size,
            MAX_RENDERED_BYTES,
        ));
    }
    filters::replace(state, value, from, to)
}

pub(super) fn join(
    state: &mut State,
    value: &Scope,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Scope, Error> {
    let separator = match &joiner {
        Some(joiner) => joiner.as_str().len(),
        None => kwargs
            .peek::<Option<Scope>>("d")?
            .map_or(0, |d| d.as_str().map_or(0, str::len)),
    };
    let separators = value
        .len()
        .unwrap_or_default()
        .saturating_sub(1)
        .saturating_mul(separator);
    if separators > MAX_RENDERED_BYTES {
        return Err(over_limit(
            "the joined text's size in bytes",
            separators,
            MAX_RENDERED_BYTES,
        ));
    }
    filters::join(state, value, joiner, attribute, kwargs)
}

pub(super) fn batch(
    state: &State,
    value: Scope,
    count: usize,
    fill: Option<Scope>,
) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the batch size", count, MAX_GROUPS));
    }
    filters::batch(state, value, count, fill)
}

pub(super) fn slice(
    state: &State,
    value: Scope,
    count: usize,
    fill: Option<Scope>,
) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the number of slices", count, MAX_GROUPS));
    }
    filters::slice(state, value, count, fill)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::template::fixtures::{error, render};
    #[test]
    fn filters_that_would_grow_without_bound_name_their_limit() {
        for (source, expected) in [
            (
                "{{ 'ab' | indent(1000000000) }}",
                "indent width is 1000000000, over the limit of 256",
            ),
            (
                "{{ 'a' | indent(width=100000) }}",
                "indent width is 100000, over the limit of 256",
            ),
            (
                "{{ [1] | tojson(indent=100000000) }}",
                "indent width is 100000000, over the limit of 256",
            ),
            (
                "{{ '%100000000s' | format('x') }}",
                "width or precision is 100000000, over the limit of 256",
            ),
            (
                "{{ '%.100000000f' | format(1.5) }}",
                "width or precision is 100000000, over the limit of 256",
            ),
            (
                "{{ ('x' * 60000) | replace('', 'y' * 60000) }}",
                "replaced text's size in bytes is 3600120000, over the limit of 1048576",
            ),
            (
                "{{ range(10000) | join('x' * 60000) }}",
                "joined text's size in bytes is 599940000, over the limit of 1048576",
            ),
            (
                "{{ [1] | batch(100000000, 0) }}",
                "batch size is 100000000, over the limit of 10000",
            ),
            (
                "{{ [1, 2, 3] | slice(100000000) }}",
                "number of slices is 100000000, over the limit of 10000",
            ),
        ] {
            let found = error(source);
            assert!(found.contains(expected), "{source}: {found}");
        }
        // Within the limits they work as the built-ins do.
        assert_eq!(
            render(
                "{{ 'a\nb' | indent(2) }}|{{ 'aXa' | replace('X', '-') }}|{{ [1, 2] | join(',') }}|{{ '%5s' | format('x') }}",
                json!({})
            ),
            Ok(json!("a\n  b|a-a|1,2|    x"))
        );
        assert_eq!(
            render("{{ [1, 2, 3] | batch(2, 0) }}", json!({})),
            Ok(json!([[1, 2], [3, 0]]))
        );
        assert_eq!(
            conversion_widths("%% %-10.3f %s %05d"),
            ConversionWidths {
                widest: Some(10),
                total: 18
            }
        );
        assert_eq!(
            conversion_widths("100%% sure"),
            ConversionWidths {
                widest: None,
                total: 0
            }
        );
    }

    /// Arguments within their limits can still make a text far larger than the value
    /// they apply to: those filters are bounded by what they would make.
    #[test]
    fn filters_that_multiply_their_input_are_bounded_by_what_they_make() {
        let body = json!({
            "lines": "\n".repeat(600_000),
            "format": "%200s".repeat(6_000),
            "numbers": (0..5_000).collect::<Vec<_>>(),
        });
        for (source, expected) in [
            (
                "{{ trigger.body.lines | indent(2) }}",
                "the indented text's size in bytes is 1800002, over the limit of 1048576",
            ),
            (
                "{{ trigger.body.format | format('x') }}",
                "the conversions' widths and precisions in all is 1200000, over the limit of 1048576",
            ),
            (
                "{{ trigger.body.numbers | tojson(indent=256) }}",
                "the indented JSON text is over 1048576 bytes, the limit",
            ),
            (
                "{{ range(100000) | list | pprint }}",
                "the printed value is over 1048576 bytes, the limit",
            ),
        ] {
            let found = render(source, body.clone())
                .expect_err("refused")
                .to_string();
            assert!(found.contains(expected), "{source}: {found}");
        }
        assert_eq!(
            render(
                "{{ trigger.body.numbers[:2] | tojson(indent=1) }}",
                body.clone()
            ),
            Ok(json!("[\n 0,\n 1\n]"))
        );
        assert_eq!(
            render("{{ [1] | pprint }}", body),
            Ok(json!("[\n    1,\n]"))
        );
    }
}
