//! The memory guards of a render.
//!
//! MiniJinja has no memory limit, and a few instructions build a value twice the size of
//! another (`{% set a = a ~ a %}`, `[a, a]`, `a + a`): thirty of them build gigabytes. So
//! a render may build at most [`MAX_RENDER_MEMORY`] bytes of values and text in all. The
//! engine offers no hook for that, and a static check cannot do it soundly: how large
//! `x * n` or `x ~ x` gets depends on the data (`{{ item.price * item.qty }}` is as
//! common as it is harmless), and a bound computed from the syntax alone would refuse
//! ordinary templates or let large inputs through. A thread-local counting allocator
//! could only abort the process. What the engine does offer (`unstable_machinery`) is its
//! compiled program: each template is compiled as usual, then run from a copy in which
//! every instruction that can make a new value is followed by a call to a guard that
//! measures the value and charges it to the render's budget (`~` and `*` are measured
//! before they run, since they are the ones that can allocate far more than their
//! operands take), raw text is emitted like any other value, and everything written goes
//! through a formatter that charges it. A value is measured in full, a part shared by
//! several containers once per container: that is what printing it, serializing it or
//! comparing it costs, so no value a render holds can be exponentially larger than its
//! budget, and neither printing nor comparing it can take longer than that.
//!
//! One thing happens before any guard runs: compiling folds constant expressions
//! (`{{ 'x' * 100000000 }}` is computed by the compiler). Those are bounded statically,
//! from the syntax tree, where their values are known: at save time too.

use std::fmt::{self, Write as _};
use std::io;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Error, ErrorKind, State, Value as Scope};

use crate::limits::MAX_JSON_DEPTH;

/// Largest rendered string, in bytes. Also the most the constant expressions of one
/// template may compute when it is compiled.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// Most bytes of values and text one render (one template, one expression) may build,
/// each value counted in full (see the module's documentation): far above what a mapping
/// over real data builds. A render holds at most about twice this at a time, since the
/// engine holds a text twice while it builds it (tests/template_memory.rs measures it).
pub const MAX_RENDER_MEMORY: usize = 32 << 20;

/// The guards of a render's program, called by the names given here: names with a space,
/// which no template can write, so none can shadow or call them.
pub(super) const VALUE_GUARD: &str = "weft value guard";
pub(super) const CONCAT_GUARD: &str = "weft concat guard";
pub(super) const REPEAT_GUARD: &str = "weft repeat guard";

/// What one value costs beyond its text: the value itself, and the most any way of
/// printing it adds (a number's digits, quotes, separators).
pub(super) const VALUE_BYTES: usize = 48;
/// The most bytes printing one character of a string takes (`\u{7f}` in a list, `\u003c`
/// in JSON).
const ESCAPED_BYTES: usize = 6;

/// A copy of a compiled program in which every instruction that can make a large value is
/// guarded (see the module's documentation): `~` and `*` by a guard that measures their
/// operands first, the calls, filters, literals, slices and `+` by one that measures what
/// they made. Raw text becomes a constant that is emitted, so that all output goes through
/// [`charged_output`]. Jump targets are moved to where their instructions moved.
pub(super) fn guarded_program<'s>(compiled: &Instructions<'s>) -> Instructions<'s> {
    let groups: Vec<Vec<Instruction<'s>>> = (0..)
        .map_while(|index| compiled.get(index))
        .map(|instruction| match instruction {
            Instruction::EmitRaw(raw) => {
                vec![Instruction::LoadConst(Scope::from(*raw)), Instruction::Emit]
            }
            Instruction::StringConcat => vec![
                Instruction::CallFunction(CONCAT_GUARD, Some(2)),
                Instruction::UnpackList(2),
                Instruction::StringConcat,
            ],
            Instruction::Mul => vec![
                Instruction::CallFunction(REPEAT_GUARD, Some(2)),
                Instruction::UnpackList(2),
                Instruction::Mul,
            ],
            Instruction::Add
            | Instruction::BuildList(_)
            | Instruction::BuildTuple(_)
            | Instruction::BuildMap(_)
            | Instruction::Slice
            | Instruction::ApplyFilter(..)
            | Instruction::CallFunction(..)
            | Instruction::CallMethod(..)
            | Instruction::CallObject(_) => vec![
                instruction.clone(),
                Instruction::CallFunction(VALUE_GUARD, Some(1)),
            ],
            other => vec![other.clone()],
        })
        .collect();
    let mut starts = Vec::with_capacity(groups.len() + 1);
    let mut next = 0u32;
    for group in &groups {
        starts.push(next);
        next += u32::try_from(group.len()).unwrap_or(u32::MAX);
    }
    starts.push(next);
    let moved = |target: &mut u32| *target = starts[*target as usize];
    let mut program = Instructions::new(compiled.name(), compiled.source());
    for (index, group) in (0u32..).zip(groups) {
        let span = compiled.get_span(index);
        let line = compiled.get_line(index);
        for mut instruction in group {
            match &mut instruction {
                Instruction::Jump(target)
                | Instruction::JumpIfFalse(target)
                | Instruction::JumpIfFalseOrPop(target)
                | Instruction::JumpIfTrueOrPop(target)
                | Instruction::Iterate(target) => moved(target),
                _ => {}
            }
            match (span, line) {
                (Some(span), _) => program.add_with_span(instruction, span),
                (None, Some(line)) => {
                    program.add_with_line(instruction, u16::try_from(line).unwrap_or(u16::MAX))
                }
                (None, None) => program.add(instruction),
            };
        }
    }
    program
}

/// What a render may still build, in bytes. It lives in the render's state, so every
/// render starts with all of [`MAX_RENDER_MEMORY`].
struct Budget {
    left: usize,
}

fn budget<'s>(state: &'s mut State<'_, '_>) -> &'s mut Budget {
    state.get_or_insert_extension_with(|| Budget {
        left: MAX_RENDER_MEMORY,
    })
}

fn over_budget() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "the values and text this template builds pass the limit of {MAX_RENDER_MEMORY} bytes for one render; build smaller values (a value doubled over and over passes any limit)"
        ),
    )
}

fn charge(state: &mut State, bytes: usize) -> Result<(), Error> {
    let budget = budget(state);
    budget.left = budget.left.checked_sub(bytes).ok_or_else(over_budget)?;
    Ok(())
}

/// Counts what is written to it, failing as soon as that passes `cap`: measures what
/// printing or serializing a value writes without keeping it, and stops early.
pub(super) struct Measure {
    pub(super) bytes: usize,
    cap: usize,
}

impl Measure {
    pub(super) fn new(cap: usize) -> Self {
        Self { bytes: 0, cap }
    }

    fn add(&mut self, bytes: usize) -> bool {
        self.bytes = self.bytes.saturating_add(bytes);
        self.bytes <= self.cap
    }

    /// What `write` writes into a measure, or `None` when that is over `cap`.
    pub(super) fn of(cap: usize, write: impl FnOnce(&mut Self) -> fmt::Result) -> Option<usize> {
        let mut measure = Self::new(cap);
        let _ = write(&mut measure);
        (measure.bytes <= cap).then_some(measure.bytes)
    }
}

impl fmt::Write for Measure {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.add(text.len()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl io::Write for Measure {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.add(bytes.len()) {
            Ok(bytes.len())
        } else {
            Err(io::Error::other("over the measured limit"))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes a value takes, counted in full (see the module's documentation): each value
/// [`VALUE_BYTES`] plus its text, each character that some way of printing escapes
/// [`ESCAPED_BYTES`], so that printing or serializing the value writes no more. Fails as
/// soon as that passes `cap`, or the value nests deeper than [`MAX_JSON_DEPTH`] (printing
/// a value recurses as deep as it nests). Iterative, and keeps no more than one iterator
/// per level.
pub(super) fn footprint(value: &Scope, cap: usize) -> Result<usize, Error> {
    struct Open {
        container: Scope,
        items: minijinja::value::ValueIter,
        /// A map's value, measured after its key.
        value: Option<Scope>,
    }
    let mut measure = Measure::new(cap);
    let mut open: Vec<Open> = Vec::new();
    let mut next = Some(value.clone());
    loop {
        if let Some(value) = next.take() {
            if !measure.add(VALUE_BYTES.saturating_add(text_bytes(&value))) {
                return Err(over_budget());
            }
            if matches!(
                value.kind(),
                ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
            ) {
                if open.len() == MAX_JSON_DEPTH {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "a value this template builds nests over the limit of {MAX_JSON_DEPTH} levels of lists and maps"
                        ),
                    ));
                }
                let items = value.try_iter()?;
                open.push(Open {
                    container: value,
                    items,
                    value: None,
                });
            }
        }
        let Some(current) = open.last_mut() else {
            return Ok(measure.bytes);
        };
        if let Some(value) = current.value.take() {
            next = Some(value);
        } else if let Some(item) = current.items.next() {
            if current.container.kind() == ValueKind::Map {
                current.value = Some(current.container.get_item(&item)?);
            }
            next = Some(item);
        } else {
            open.pop();
        }
    }
}

/// The bytes of a string's or a byte string's text, escapes counted in full.
fn text_bytes(value: &Scope) -> usize {
    let Some(bytes) = value.as_bytes() else {
        return 0;
    };
    // A byte string prints each byte as `\xNN`.
    let escapes_all = value.kind() == ValueKind::Bytes;
    bytes
        .iter()
        .map(|&byte| match byte {
            b'"' | b'\'' | b'\\' | b'<' | b'>' | b'&' | 0x7f => ESCAPED_BYTES,
            _ if byte < 0x20 || escapes_all => ESCAPED_BYTES,
            _ => 1,
        })
        .sum()
}

/// The bytes printing a value writes, or the budget's error once that passes `cap`.
pub(super) fn printed_bytes(value: &Scope, cap: usize) -> Result<usize, Error> {
    Measure::of(cap, |measure| write!(measure, "{value}")).ok_or_else(over_budget)
}

/// Charges what a call, filter, literal, slice or `+` made (see [`guarded_program`]).
pub(super) fn guard_value(state: &mut State, value: Scope) -> Result<Scope, Error> {
    let cap = budget(state).left;
    charge(state, footprint(&value, cap)?)?;
    Ok(value)
}

/// Charges the text `left ~ right` makes, before it is made: printing a value can write
/// far more than the value takes. Returns the operands for the concatenation, in the
/// reverse order unpacking a list onto the stack expects.
pub(super) fn guard_concat(state: &mut State, left: Scope, right: Scope) -> Result<Scope, Error> {
    let cap = budget(state).left;
    let printed = printed_bytes(&left, cap)?;
    let printed = printed.saturating_add(printed_bytes(&right, cap - printed)?);
    charge(state, VALUE_BYTES.saturating_add(printed))?;
    Ok(Scope::from(vec![right, left]))
}

/// Charges what `left * right` makes, before it is made: a text or a list repeated
/// `n` times takes `n` times its size; a product of numbers is one number.
pub(super) fn guard_repeat(state: &mut State, left: Scope, right: Scope) -> Result<Scope, Error> {
    let cap = budget(state).left;
    let bytes = match (repeat_count(&left), repeat_count(&right)) {
        (None, Some(count)) => repeated_bytes(&left, count, cap)?,
        (Some(count), None) => repeated_bytes(&right, count, cap)?,
        _ => VALUE_BYTES,
    };
    charge(state, bytes)?;
    Ok(Scope::from(vec![right, left]))
}

/// What a text or a list repeated `count` times takes: its content `count` times over.
pub(super) fn repeated_bytes(value: &Scope, count: usize, cap: usize) -> Result<usize, Error> {
    let content = footprint(value, cap)? - VALUE_BYTES;
    Ok(content.saturating_mul(count).saturating_add(VALUE_BYTES))
}

/// The count a value repeats the other operand of `*` by: a number the engine takes as
/// a count, when the value is no text or list itself.
pub(super) fn repeat_count(value: &Scope) -> Option<usize> {
    match value.kind() {
        ValueKind::Number | ValueKind::Bool => value.as_usize(),
        _ => None,
    }
}

/// Writes a value into the output or a capture (`{% set x %}…{% endset %}`), charging
/// what it writes first.
pub(super) fn charged_output(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &Scope,
) -> Result<(), Error> {
    let escaping = !matches!(state.auto_escape(), AutoEscape::None);
    let cap = budget(state).left;
    let printed = printed_bytes(value, if escaping { cap / ESCAPED_BYTES } else { cap })?;
    let written = if escaping {
        // Escaping writes each character as up to six, and JSON quotes a string.
        printed.saturating_mul(ESCAPED_BYTES).saturating_add(2)
    } else {
        printed
    };
    charge(state, written)?;
    minijinja::escape_formatter(out, state, value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde_json::Value;

    use crate::template::fixtures::{error, refused_over_text, render, unguarded};
    use crate::template::{Templates, scope};

    /// Every way of growing a value over and over, whatever holds the value in between,
    /// is stopped at the render's memory limit, and the error names it.
    #[test]
    fn values_grown_over_and_over_are_stopped_at_the_memory_limit() {
        let again = |step: &str, times: usize| step.repeat(times);
        let chained: String = (0..30)
            .map(|i| format!("{{% set a{} = a{i} ~ a{i} %}}", i + 1))
            .collect();
        let ranges: String = (0..30)
            .map(|i| format!("{{% set r{i} = range(100000) | list %}}"))
            .collect();
        let sources = [
            // `set` again and again, and a chain of names.
            format!(
                "{{% set a = trigger.body.s %}}{}{{{{ a | length }}}}",
                again("{% set a = a ~ a %}", 30)
            ),
            format!("{{% set a0 = trigger.body.s %}}{chained}{{{{ a30 | length }}}}"),
            // Nested `with` blocks and nested loops, over a list literal.
            format!(
                "{{% with a = trigger.body.s %}}{}{{{{ a | length }}}}{}{{% endwith %}}",
                again("{% with a = a ~ a %}", 20),
                again("{% endwith %}", 20)
            ),
            format!(
                "{{% for a in [trigger.body.s] %}}{}{{{{ a | length }}}}{}{{% endfor %}}",
                again("{% for a in [a ~ a] %}", 20),
                again("{% endfor %}", 20)
            ),
            // A recursive loop (the engine's only recursion: it has no macros).
            "{% for a in [trigger.body.s] recursive %}{{ loop([a ~ a]) }}{% endfor %}".into(),
            // Block captures, and a filter block over a loop.
            format!(
                "{{% set a %}}{{{{ trigger.body.s }}}}{{% endset %}}{}{{{{ a | length }}}}",
                again("{% set a %}{{ a }}{{ a }}{% endset %}", 30)
            ),
            "{% filter upper %}{% for i in range(10000) %}{{ trigger.body.s }}{% endfor %}{% endfilter %}".into(),
            // `+` on texts and on lists (which the engine joins lazily), `*` on both.
            format!(
                "{{% set a = trigger.body.s %}}{}{{{{ a | length }}}}",
                again("{% set a = a + a %}", 30)
            ),
            format!(
                "{{% set l = [trigger.body.s] %}}{}{{{{ l | length }}}}",
                again("{% set l = l + l %}", 40)
            ),
            "{{ (trigger.body.s * 100000) | length }}".into(),
            "{{ ([trigger.body.s] * 100000000) | length }}".into(),
            format!(
                "{{% set a = trigger.body.s %}}{}{{{{ a | length }}}}",
                again("{% set a = a * 4 %}", 15)
            ),
            // `range` and the lists made of it, kept under many names.
            format!("{ranges}{{{{ r0 | length }}}}"),
            // List, tuple and map literals, `dict`, and filters that repeat a value.
            format!(
                "{{% set l = trigger.body.s %}}{}{{{{ l | length }}}}",
                again("{% set l = [l, l, l, l, l, l, l, l] %}", 10)
            ),
            format!(
                "{{% set l = trigger.body.s %}}{}{{{{ l | length }}}}",
                again("{% set l = (l, l) %}", 30)
            ),
            format!(
                "{{% set m = trigger.body.s %}}{}{{{{ m | length }}}}",
                again("{% set m = {'a': m, 'b': m} %}", 30)
            ),
            format!(
                "{{% set m = trigger.body.s %}}{}{{{{ m | length }}}}",
                again("{% set m = dict(a=m, b=m) %}", 30)
            ),
            format!(
                "{{% set l = trigger.body.s %}}{}{{{{ l | length }}}}",
                again("{% set l = [l] | batch(1000, l) %}", 5)
            ),
            format!(
                "{{% set l = trigger.body.s %}}{}{{{{ l | length }}}}",
                again("{% set l = [l, l] | map('list') | list %}", 30)
            ),
            // Comparing a value that shares its parts would take exponential time.
            format!(
                "{{% set l = trigger.body.s %}}{}{{{{ l == l }}}}",
                again("{% set l = [l, l] %}", 60)
            ),
        ];
        for source in sources {
            let found = refused_over_text(&source);
            assert!(
                found.contains("pass the limit of 33554432 bytes for one render"),
                "{source}: {found}"
            );
        }
    }

    #[test]
    fn values_nest_at_most_as_deep_as_a_payload() {
        let source = format!(
            "{{% set a = 1 %}}{}{{{{ a }}}}",
            "{% set a = [a] %}".repeat(100)
        );
        let found = error(&source);
        assert!(
            found.contains("nests over the limit of 64 levels"),
            "{found}"
        );
        let within = format!(
            "{{% set a = 1 %}}{}{{{{ a | length }}}}",
            "{% set a = [a] %}".repeat(64)
        );
        assert_eq!(render(&within, json!({})), Ok(json!("1")));
    }

    /// The budget is per render: a template may build almost all of it, and every
    /// template of a value, every expression, starts over.
    #[test]
    fn each_render_has_its_own_budget() {
        let source = "{{ (trigger.body.s * 400) | length }}";
        assert_eq!(
            render(source, json!({"s": "x".repeat(64 * 1024)})),
            Ok(json!(26_214_400))
        );
        let fields: serde_json::Map<String, Value> =
            (0..4).map(|i| (format!("f{i}"), json!(source))).collect();
        let context = scope(&json!({"trigger": {"body": {"s": "x".repeat(64 * 1024)}}}));
        assert!(
            Templates::new()
                .render_value(&Value::Object(fields), &context)
                .is_ok()
        );
        assert!(refused_over_text("{{ (trigger.body.s * 600) | length }}").contains("33554432"));
    }

    /// Templates as mappings write them: the guards change none of their results.
    #[test]
    fn the_guards_change_no_result() {
        let body = json!({
            "items": [{"name": "a", "price": 2, "qty": 3, "tags": ["x", "y"]}, {"name": "b", "price": 5, "qty": 1, "tags": []}],
            "user": {"first": "Ada", "last": "Lovelace"},
            "text": "line one\nline two",
        });
        let sources = [
            "{% for item in trigger.body.items %}{{ loop.index }}. {{ item.name | upper }}: {{ item.price * item.qty }}{% if not loop.last %}, {% endif %}{% endfor %}",
            "{{ trigger.body.user.first ~ ' ' ~ trigger.body.user.last }}!",
            "{% set total = trigger.body.items | map(attribute='price') | sum %}{{ total }} {{ total + 1 }} {{ total * 2 }}",
            "{% for item in trigger.body.items if item.tags %}{{ item.tags | join('/') }}{% else %}none{% endfor %}",
            "{% with name = trigger.body.user.first %}{{ name[1:] }}{{ name[::-1] }}{% endwith %}",
            "{% set caps %}{{ trigger.body.user.first }}{% endset %}{{ caps | lower }} {% filter upper %}{{ trigger.body.text }}{% endfilter %}",
            "names: {{ trigger.body.items | selectattr('qty', 'gt', 1) | map(attribute='name') | list }}",
            "{{ [1, 2] + [3] }} {{ (1, 2) }} {{ {'a': 1} }} {{ dict(b=2) }} {{ range(3) | list }}",
            "{{ trigger.body.text | indent(2) }} {{ 'x' if trigger.body.user.first == 'Ada' else 'y' }}",
            "{{ trigger.body.items | tojson }} {{ '%s-%03d' | format('a', 7) }} {{ 'ab' in trigger.body.user.first ~ 'ab' }}",
            "{% for k, v in trigger.body.user | dictsort %}{{ k }}={{ v }};{% endfor %}",
            "{% for x in [[1, [2]], [3]] recursive %}[{% if x is sequence %}{{ loop(x) }}{% else %}{{ x }}{% endif %}]{% endfor %}",
            "{% set a = trigger.body.user.first %}{% set a = a ~ a %}{% set a = a * 2 %}{{ a }} {{ a | length }}",
            "{% for item in trigger.body.items %}{% if item.qty > 2 %}many{% elif item.qty == 1 %}one{% else %}some{% endif %}{% endfor %}",
            "{{ trigger.body.items and trigger.body.missing is defined or 'fallback' }} {{ 1 < trigger.body.items | length < 3 }} {{ not trigger.body.user }}",
            "\n  text before {{ 1 }} and after  \n",
        ];
        let plain = unguarded();
        let context = scope(&json!({"trigger": {"body": body}}));
        for source in sources {
            let expected = plain.render_str(source, context.clone()).expect("renders");
            assert_eq!(
                render(source, body.clone()),
                Ok(json!(expected)),
                "{source}"
            );
        }
        for expr in [
            "trigger.body.items | length > 1 and trigger.body.user.first ~ '!' == 'Ada!'",
            "trigger.body.items[0].price * 2 + 1",
            "[trigger.body.user.first] * 2 + ['z']",
        ] {
            let expected = plain
                .compile_expression(expr)
                .and_then(|compiled| compiled.eval(context.clone()))
                .expect("evaluates");
            assert_eq!(
                Templates::new().eval(expr, &context),
                Ok(expected),
                "{expr}"
            );
        }
    }
}
