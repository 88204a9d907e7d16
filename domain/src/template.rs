//! Sandboxed template rendering for node inputs, transform outputs and conditions.
//!
//! A JSON string containing `{{ … }}` is a template. A string that is exactly one
//! `{{ expr }}` keeps the JSON type of the value (number, object, array); any other
//! template renders to a string. Rendering is bounded by MiniJinja's fuel (time), a
//! recursion limit (depth), a memory budget and a cap on the rendered size.
//!
//! Fuel counts instructions, not bytes: the built-in filters whose arguments make their
//! output grow without bound (`indent(1000000000)`, `replace("", …)` on a long text,
//! `batch(…, fill)`, a `%100000000s` format) are replaced by versions that refuse such
//! arguments first. A panic inside the engine becomes an error of the template, never of
//! the process rendering it.
//!
//! # Memory
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

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use minijinja::machinery::{self, CodeGenerator, Instruction, Instructions};
use minijinja::value::{Kwargs, Rest, StringInput, ValueKind, ValueOrKwargs};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, Value as Scope, filters,
};
use serde_json::Value;

use crate::limits::{MAX_JSON_DEPTH, MAX_RENDERED_VALUE_BYTES};

/// Fuel for one template or expression: enough for any reasonable mapping, small enough
/// that a runaway loop stops in milliseconds. The memory guards (see the module's
/// documentation) run instructions too: a loop printing the fields of items runs about a
/// third more. So: 100,000 for the template's own, and two fifths on top for the guards.
const FUEL: u64 = 140_000;
const RECURSION_LIMIT: usize = 32;
/// Largest rendered string, in bytes. Also the most the constant expressions of one
/// template may compute when it is compiled.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// Most bytes of values and text one render (one template, one expression) may build,
/// each value counted in full (see the module's documentation): far above what a mapping
/// over real data builds. A render holds at most about twice this at a time, since the
/// engine holds a text twice while it builds it (tests/template_memory.rs measures it).
pub const MAX_RENDER_MEMORY: usize = 32 << 20;
/// Largest template source, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most operators in one tag of a template (see [`check_source`]). Real expressions hold
/// a handful; the engine's stack gives out at about a thousand.
pub const MAX_OPERATORS: usize = 256;
/// Widest indentation `indent` and `tojson` accept, and widest field or precision of a
/// `format` conversion.
pub const MAX_PADDING: usize = 256;
/// Most groups `batch` and `slice` may make.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl TemplateError {
    fn from_minijinja(err: &Error) -> Self {
        let mut message = err.to_string();
        if let Some(detail) = err.detail()
            && !message.contains(detail)
        {
            message = format!("{message}: {detail}");
        }
        Self(message)
    }
}

/// The template engine, configured once per process.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a string is a template at all (plain strings skip the engine).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%")
}

/// The expression of a string that is exactly one `{{ expr }}`, if it is one.
fn sole_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let is_single = !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%");
    is_single.then_some(inner.trim())
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The one mutable value of the engine: a namespace can be made to hold itself,
        // and printing or serializing it then recurses until the stack overflows.
        env.remove_global("namespace");
        env.set_formatter(charged_output);
        env.add_function(VALUE_GUARD, guard_value);
        env.add_function(CONCAT_GUARD, guard_concat);
        env.add_function(REPEAT_GUARD, guard_repeat);
        env.add_filter("indent", indent);
        env.add_filter("tojson", tojson);
        env.add_filter("pprint", pprint);
        env.add_filter("format", format);
        env.add_filter("replace", replace);
        env.add_filter("join", join);
        env.add_filter("batch", batch);
        env.add_filter("slice", slice);
        Self { env }
    }

    /// Parses a template string and returns the variables it reads, as dotted paths
    /// (`nodes.lookup.output.name`), so references can be checked at save time.
    pub fn variables(&self, source: &str) -> Result<Vec<String>, TemplateError> {
        check_source(source, false)?;
        let mut names: Vec<String> = guarded(|| match sole_expression(source) {
            Some(expr) => {
                parse_expression(expr)?;
                self.env
                    .compile_expression(expr)
                    .map(|compiled| compiled.undeclared_variables(true).into_iter().collect())
            }
            None => {
                self.parse_template(source)?;
                self.env
                    .template_from_str(source)
                    .map(|template| template.undeclared_variables(true).into_iter().collect())
            }
        })?;
        names.sort();
        Ok(names)
    }

    /// Parses a bare expression (a condition's `if`) and returns the variables it reads.
    pub fn expression_variables(&self, expr: &str) -> Result<Vec<String>, TemplateError> {
        check_source(expr, true)?;
        let mut names: Vec<String> = guarded(|| {
            parse_expression(expr)?;
            self.env
                .compile_expression(expr)
                .map(|compiled| compiled.undeclared_variables(true).into_iter().collect())
        })?;
        names.sort();
        Ok(names)
    }

    /// Renders every template string inside a JSON value; other values are kept as they are.
    /// What the templates render adds up to at most [`MAX_RENDERED_VALUE_BYTES`]: many
    /// fields each copying a large value would otherwise multiply it.
    pub fn render_value(&self, value: &Value, scope: &Scope) -> Result<Value, TemplateError> {
        let mut rendered = 0;
        self.render_within(value, scope, &mut rendered)
    }

    fn render_within(
        &self,
        value: &Value,
        scope: &Scope,
        rendered: &mut usize,
    ) -> Result<Value, TemplateError> {
        match value {
            Value::String(source) if is_template(source) => {
                let (value, size) = self.render_string(source, scope)?;
                *rendered += size;
                if *rendered > MAX_RENDERED_VALUE_BYTES {
                    return Err(TemplateError(format!(
                        "the templates of this value render over {MAX_RENDERED_VALUE_BYTES} bytes in all, the limit"
                    )));
                }
                Ok(value)
            }
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_within(item, scope, rendered))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(fields) => fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_within(item, scope, rendered)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// The rendered value and its size as JSON text.
    fn render_string(&self, source: &str, scope: &Scope) -> Result<(Value, usize), TemplateError> {
        check_source(source, false)?;
        if let Some(expr) = sole_expression(source) {
            let value = self.eval(expr, scope)?;
            return to_json(&value);
        }
        let rendered = guarded(|| {
            let template = self.parse_template(source)?;
            let mut generator = CodeGenerator::new(TEMPLATE_NAME, source);
            generator.compile_stmt(&template);
            let mut text = String::new();
            self.run(&generator.finish().0, scope, &mut text)?;
            Ok(text)
        })?;
        if rendered.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError(format!(
                "rendered text is {} bytes, over the limit of {MAX_RENDERED_BYTES}",
                rendered.len()
            )));
        }
        let size = rendered.len();
        Ok((Value::String(rendered), size))
    }

    /// Evaluates a bare expression to a typed value.
    pub fn eval(&self, expr: &str, scope: &Scope) -> Result<Scope, TemplateError> {
        check_source(expr, true)?;
        guarded(|| {
            let expression = parse_expression(expr)?;
            let mut generator = CodeGenerator::new(EXPRESSION_NAME, expr);
            generator.compile_expr(&expression);
            let value = self.run(&generator.finish().0, scope, &mut String::new())?;
            value.ok_or_else(|| {
                Error::new(ErrorKind::InvalidOperation, "the expression gave no value")
            })
        })
    }

    /// Evaluates a bare expression for its truth (a condition's `if`).
    pub fn eval_bool(&self, expr: &str, scope: &Scope) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, scope)?.is_true())
    }

    /// Runs a compiled template or expression, guarded (see [`guarded_program`]), writing
    /// into `text`; an expression leaves its value.
    fn run(
        &self,
        compiled: &Instructions<'_>,
        scope: &Scope,
        text: &mut String,
    ) -> Result<Option<Scope>, Error> {
        let (value, _) = machinery::eval(
            &self.env,
            &guarded_program(compiled),
            scope.clone(),
            &BTreeMap::new(),
            &mut machinery::make_string_output(text),
            AutoEscape::None,
        )?;
        Ok(value)
    }

    /// The syntax tree of a template, once its constant expressions are checked.
    fn parse_template<'s>(&self, source: &'s str) -> Result<Stmt<'s>, Error> {
        let template = machinery::parse(source, TEMPLATE_NAME, self.env.syntax().clone())?;
        Folding::default().statement(&template)?;
        Ok(template)
    }
}

/// The names the engine gives templates and expressions in its errors.
const TEMPLATE_NAME: &str = "<string>";
const EXPRESSION_NAME: &str = "<expression>";

/// The syntax tree of an expression, once its constant expressions are checked.
fn parse_expression(expr: &str) -> Result<Expr<'_>, Error> {
    let expression = machinery::parse_expr(expr)?;
    Folding::default().expr(&expression)?;
    Ok(expression)
}

/// Runs the engine, turning its errors, and its panics (the engine's own bugs, found by
/// fuzzing, e.g. a slice step of `i64::MIN`), into errors of the template.
fn guarded<T>(run: impl FnOnce() -> Result<T, Error>) -> Result<T, TemplateError> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|e| TemplateError::from_minijinja(&e)),
        Err(panic) => {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_owned());
            Err(TemplateError(format!(
                "the template engine failed on this template ({cause}); rewrite the expression"
            )))
        }
    }
}

fn over_limit(what: &str, value: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} is {value}, over the limit of {limit}"),
    )
}

/// The guards of a render's program, called by the names given here: names with a space,
/// which no template can write, so none can shadow or call them.
const VALUE_GUARD: &str = "weft value guard";
const CONCAT_GUARD: &str = "weft concat guard";
const REPEAT_GUARD: &str = "weft repeat guard";

/// What one value costs beyond its text: the value itself, and the most any way of
/// printing it adds (a number's digits, quotes, separators).
const VALUE_BYTES: usize = 48;
/// The most bytes printing one character of a string takes (`\u{7f}` in a list, `\u003c`
/// in JSON).
const ESCAPED_BYTES: usize = 6;

/// A copy of a compiled program in which every instruction that can make a large value is
/// guarded (see the module's documentation): `~` and `*` by a guard that measures their
/// operands first, the calls, filters, literals, slices and `+` by one that measures what
/// they made. Raw text becomes a constant that is emitted, so that all output goes through
/// [`charged_output`]. Jump targets are moved to where their instructions moved.
fn guarded_program<'s>(compiled: &Instructions<'s>) -> Instructions<'s> {
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
struct Measure {
    bytes: usize,
    cap: usize,
}

impl Measure {
    fn new(cap: usize) -> Self {
        Self { bytes: 0, cap }
    }

    fn add(&mut self, bytes: usize) -> bool {
        self.bytes = self.bytes.saturating_add(bytes);
        self.bytes <= self.cap
    }

    /// What `write` writes into a measure, or `None` when that is over `cap`.
    fn of(cap: usize, write: impl FnOnce(&mut Self) -> fmt::Result) -> Option<usize> {
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
fn footprint(value: &Scope, cap: usize) -> Result<usize, Error> {
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
fn printed_bytes(value: &Scope, cap: usize) -> Result<usize, Error> {
    Measure::of(cap, |measure| write!(measure, "{value}")).ok_or_else(over_budget)
}

/// Charges what a call, filter, literal, slice or `+` made (see [`guarded_program`]).
fn guard_value(state: &mut State, value: Scope) -> Result<Scope, Error> {
    let cap = budget(state).left;
    charge(state, footprint(&value, cap)?)?;
    Ok(value)
}

/// Charges the text `left ~ right` makes, before it is made: printing a value can write
/// far more than the value takes. Returns the operands for the concatenation, in the
/// reverse order unpacking a list onto the stack expects.
fn guard_concat(state: &mut State, left: Scope, right: Scope) -> Result<Scope, Error> {
    let cap = budget(state).left;
    let printed = printed_bytes(&left, cap)?;
    let printed = printed.saturating_add(printed_bytes(&right, cap - printed)?);
    charge(state, VALUE_BYTES.saturating_add(printed))?;
    Ok(Scope::from(vec![right, left]))
}

/// Charges what `left * right` makes, before it is made: a text or a list repeated
/// `n` times takes `n` times its size; a product of numbers is one number.
fn guard_repeat(state: &mut State, left: Scope, right: Scope) -> Result<Scope, Error> {
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
fn repeated_bytes(value: &Scope, count: usize, cap: usize) -> Result<usize, Error> {
    let content = footprint(value, cap)? - VALUE_BYTES;
    Ok(content.saturating_mul(count).saturating_add(VALUE_BYTES))
}

/// The count a value repeats the other operand of `*` by: a number the engine takes as
/// a count, when the value is no text or list itself.
fn repeat_count(value: &Scope) -> Option<usize> {
    match value.kind() {
        ValueKind::Number | ValueKind::Bool => value.as_usize(),
        _ => None,
    }
}

/// Writes a value into the output or a capture (`{% set x %}…{% endset %}`), charging
/// what it writes first.
fn charged_output(
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

/// Bounds what compiling a template computes ahead of any guard: the compiler folds each
/// constant expression (literals and operators over them) into its value. Their values
/// are computed here as the compiler would, each only once the values it is made of are
/// known to give one under the limit, so the bound is exact and nothing large is ever
/// computed. Every constant expression counts, nested ones too, since the compiler
/// computes each of them (some more than once, the largest of them at a time).
#[derive(Default)]
struct Folding {
    bytes: usize,
}

impl Folding {
    fn statements(&mut self, statements: &[Stmt]) -> Result<(), Error> {
        statements
            .iter()
            .try_for_each(|statement| self.statement(statement))
    }

    fn statement(&mut self, statement: &Stmt) -> Result<(), Error> {
        match statement {
            Stmt::Template(template) => self.statements(&template.children),
            Stmt::EmitExpr(emit) => self.expr(&emit.expr).map(drop),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::ForLoop(for_loop) => {
                self.exprs([&for_loop.target, &for_loop.iter])?;
                self.exprs(&for_loop.filter_expr)?;
                self.statements(&for_loop.body)?;
                self.statements(&for_loop.else_body)
            }
            Stmt::IfCond(condition) => {
                self.expr(&condition.expr)?;
                self.statements(&condition.true_body)?;
                self.statements(&condition.false_body)
            }
            Stmt::WithBlock(with) => {
                for (target, value) in &with.assignments {
                    self.exprs([target, value])?;
                }
                self.statements(&with.body)
            }
            Stmt::Set(set) => self.exprs([&set.target, &set.expr]),
            Stmt::SetBlock(set) => {
                self.expr(&set.target)?;
                self.exprs(&set.filter)?;
                self.statements(&set.body)
            }
            Stmt::AutoEscape(block) => {
                self.expr(&block.enabled)?;
                self.statements(&block.body)
            }
            Stmt::FilterBlock(block) => {
                self.expr(&block.filter)?;
                self.statements(&block.body)
            }
            Stmt::Do(call) => {
                self.expr(&call.call.expr)?;
                self.args(&call.call.args)
            }
        }
    }

    fn exprs<'e, 's: 'e>(
        &mut self,
        exprs: impl IntoIterator<Item = &'e Expr<'s>>,
    ) -> Result<(), Error> {
        exprs
            .into_iter()
            .try_for_each(|expr| self.expr(expr).map(drop))
    }

    fn args(&mut self, args: &[CallArg]) -> Result<(), Error> {
        self.exprs(args.iter().map(|arg| match arg {
            CallArg::Pos(expr)
            | CallArg::Kwarg(_, expr)
            | CallArg::PosSplat(expr)
            | CallArg::KwargSplat(expr) => expr,
        }))
    }

    /// The value the compiler folds `expr` into, if it folds it.
    fn expr(&mut self, expr: &Expr) -> Result<Option<Scope>, Error> {
        let bytes = match expr {
            Expr::UnaryOp(unary) => {
                if self.expr(&unary.expr)?.is_none() {
                    return Ok(None);
                }
                VALUE_BYTES
            }
            Expr::BinOp(binary) => {
                let (left, right) = (self.expr(&binary.left)?, self.expr(&binary.right)?);
                let (Some(left), Some(right)) = (left, right) else {
                    return Ok(None);
                };
                match binary.op {
                    ast::BinOpKind::Add => {
                        footprint(&left, usize::MAX)?.saturating_add(footprint(&right, usize::MAX)?)
                    }
                    ast::BinOpKind::Concat => printed_bytes(&left, usize::MAX)?
                        .saturating_add(printed_bytes(&right, usize::MAX)?)
                        .saturating_add(VALUE_BYTES),
                    ast::BinOpKind::Mul => match (repeat_count(&left), repeat_count(&right)) {
                        (None, Some(count)) => repeated_bytes(&left, count, usize::MAX)?,
                        (Some(count), None) => repeated_bytes(&right, count, usize::MAX)?,
                        _ => VALUE_BYTES,
                    },
                    _ => VALUE_BYTES,
                }
            }
            Expr::Compare(compare) => {
                let mut constant = self.expr(&compare.expr)?.is_some();
                for operand in &compare.ops {
                    constant &= self.expr(&operand.expr)?.is_some();
                }
                if !constant {
                    return Ok(None);
                }
                VALUE_BYTES
            }
            // Literals, and lists, tuples and maps of literals, fold into what they are
            // written as; nothing else folds.
            _ => {
                self.parts(expr)?;
                return Ok(expr.as_const());
            }
        };
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_RENDERED_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the constant expressions of this template compute {} bytes or more when it is compiled, over the limit of {MAX_RENDERED_BYTES}",
                    self.bytes
                ),
            ));
        }
        Ok(expr.as_const())
    }

    /// Checks the expressions `expr` is made of, for an expression that does not fold.
    fn parts(&mut self, expr: &Expr) -> Result<(), Error> {
        match expr {
            Expr::Var(_) | Expr::Const(_) => Ok(()),
            Expr::UnaryOp(unary) => self.expr(&unary.expr).map(drop),
            Expr::BinOp(binary) => self.exprs([&binary.left, &binary.right]),
            Expr::Compare(compare) => {
                self.expr(&compare.expr)?;
                self.exprs(compare.ops.iter().map(|operand| &operand.expr))
            }
            Expr::Slice(slice) => {
                self.expr(&slice.expr)?;
                self.exprs(slice.start.iter().chain(&slice.stop).chain(&slice.step))
            }
            Expr::IfExpr(choice) => {
                self.exprs([&choice.test_expr, &choice.true_expr])?;
                self.exprs(&choice.false_expr)
            }
            Expr::Filter(filter) => {
                self.exprs(&filter.expr)?;
                self.args(&filter.args)
            }
            Expr::Test(test) => {
                self.expr(&test.expr)?;
                self.args(&test.args)
            }
            Expr::GetAttr(attribute) => self.expr(&attribute.expr).map(drop),
            Expr::GetItem(item) => self.exprs([&item.expr, &item.subscript_expr]),
            Expr::Call(call) => {
                self.expr(&call.expr)?;
                self.args(&call.args)
            }
            Expr::List(list) => self.exprs(&list.items),
            Expr::Tuple(tuple) => self.exprs(&tuple.items),
            Expr::Map(map) => self.exprs(map.keys.iter().chain(&map.values)),
        }
    }
}

/// The width `indent` indents by when given none.
const DEFAULT_INDENT: usize = 4;

fn indent(
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

fn tojson(value: &Scope, indent: Option<Scope>, kwargs: Kwargs) -> Result<Scope, Error> {
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
fn pprint(value: &Scope) -> Result<String, Error> {
    if Measure::of(MAX_RENDERED_BYTES, |measure| write!(measure, "{value:#?}")).is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the printed value is over {MAX_RENDERED_BYTES} bytes, the limit"),
        ));
    }
    Ok(filters::pprint(value))
}

fn format(
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

fn replace(
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

fn join(
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

fn batch(state: &State, value: Scope, count: usize, fill: Option<Scope>) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the batch size", count, MAX_GROUPS));
    }
    filters::batch(state, value, count, fill)
}

fn slice(state: &State, value: Scope, count: usize, fill: Option<Scope>) -> Result<Scope, Error> {
    if count > MAX_GROUPS {
        return Err(over_limit("the number of slices", count, MAX_GROUPS));
    }
    filters::slice(state, value, count, fill)
}

/// Refuses a source over [`MAX_TEMPLATE_BYTES`], or one of whose tags (`{{ … }}`,
/// `{% … %}`; the whole source when `is_expression`) holds more than
/// [`MAX_OPERATORS`] operators. The engine parses and compiles chains of operators
/// (`a.b.c…`, `x|f|f…`, `1+1+…`, `- - -…`) recursively, and a chain some thousands long
/// overflows a thread's stack, which aborts the process: no panic to catch.
fn check_source(source: &str, is_expression: bool) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError(format!(
            "template is {} bytes, over the limit of {MAX_TEMPLATE_BYTES}",
            source.len()
        )));
    }
    let operators = most_operators_in_a_tag(source, is_expression);
    if operators > MAX_OPERATORS {
        return Err(TemplateError(format!(
            "an expression has {operators} operators, over the limit of {MAX_OPERATORS}; split it up"
        )));
    }
    Ok(())
}

/// The most operator characters and operator words (`and`, `not`, `is`, …) found in one
/// tag, outside its string literals. Counting `==` twice only errs on the safe side.
fn most_operators_in_a_tag(source: &str, is_expression: bool) -> usize {
    let bytes = source.as_bytes();
    let (mut most, mut count, mut brackets) = (0, 0, 0usize);
    let mut in_tag = is_expression;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if !in_tag {
            if byte == b'{' && matches!(bytes.get(i + 1), Some(b'{' | b'%')) {
                in_tag = true;
                count = 0;
                brackets = 0;
                i += 1;
            }
            i += 1;
            continue;
        }
        if let Some(open) = quote {
            match byte {
                b'\\' => i += 1,
                _ if byte == open => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'\'' | b'"' => quote = Some(byte),
            // A tag ends at the first `}}` or `%}` outside brackets: the latest the
            // engine can end it, so no operator of it escapes the count.
            b'}' | b'%' if brackets == 0 && !is_expression && bytes.get(i + 1) == Some(&b'}') => {
                most = usize::max(most, count);
                in_tag = false;
                i += 1;
            }
            b'{' => brackets += 1,
            b'}' | b')' | b']' => brackets = brackets.saturating_sub(1),
            b'[' | b'(' => {
                brackets += 1;
                count += 1;
            }
            b'.' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' => {
                count += 1
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while bytes
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    i += 1;
                }
                if matches!(
                    &bytes[start..=i],
                    b"and" | b"or" | b"not" | b"in" | b"is" | b"if" | b"else"
                ) {
                    count += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    usize::max(most, count)
}

fn to_json(value: &Scope) -> Result<(Value, usize), TemplateError> {
    if value.is_undefined() {
        return Ok((Value::Null, 0));
    }
    // Measured before it is converted, which takes several times the text's size.
    let mut measure = Measure::new(usize::MAX);
    serde_json::to_writer(&mut measure, value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
    let size = measure.bytes;
    if size > MAX_RENDERED_BYTES {
        return Err(TemplateError(format!(
            "result is {size} bytes, over the limit of {MAX_RENDERED_BYTES}"
        )));
    }
    let json = serde_json::to_value(value)
        .map_err(|e| TemplateError(format!("result is not representable as JSON: {e}")))?;
    Ok((json, size))
}

/// Builds a template scope from a JSON object (`trigger`, `nodes`, `run`, …).
pub fn scope(value: &Value) -> Scope {
    Scope::from(minijinja::value::Serde(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: Value, scope_json: Value) -> Result<Value, TemplateError> {
        Templates::new().render_value(&template, &scope(&scope_json))
    }

    #[test]
    fn a_sole_expression_keeps_its_json_type() {
        let ctx = json!({"trigger": {"body": {"n": 41, "tags": ["a", "b"], "o": {"k": true}}}});
        assert_eq!(
            render(json!("{{ trigger.body.n + 1 }}"), ctx.clone()),
            Ok(json!(42))
        );
        assert_eq!(
            render(json!("{{ trigger.body.tags }}"), ctx.clone()),
            Ok(json!(["a", "b"]))
        );
        assert_eq!(
            render(json!(" {{trigger.body.o}} "), ctx),
            Ok(json!({"k": true}))
        );
    }

    #[test]
    fn mixed_text_renders_to_a_string_and_nested_values_are_walked() {
        let ctx = json!({"nodes": {"a": {"output": {"name": "Ada"}}}});
        let out = render(
            json!({"text": "Hi {{ nodes.a.output.name }}!", "list": [1, "{{ nodes.a.output.name | upper }}"], "plain": "no template"}),
            ctx,
        );
        assert_eq!(
            out,
            Ok(json!({"text": "Hi Ada!", "list": [1, "ADA"], "plain": "no template"}))
        );
    }

    #[test]
    fn undefined_variables_are_errors_that_name_them() {
        let err = render(
            json!("{{ trigger.body.missing.deeper }}"),
            json!({"trigger": {"body": {}}}),
        )
        .expect_err("undefined must fail");
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let err = render(
            json!(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
            ),
            json!({}),
        )
        .expect_err("must be bounded");
        assert!(err.to_string().to_lowercase().contains("fuel"), "{err}");
    }

    #[test]
    fn variables_lists_dotted_paths_for_reference_checks() {
        let templates = Templates::new();
        let vars = templates
            .variables("{{ nodes.lookup.output.name }} and {{ trigger.body.x }}")
            .expect("parses");
        assert!(
            vars.contains(&"nodes.lookup.output.name".to_string()),
            "{vars:?}"
        );
        assert!(vars.contains(&"trigger.body.x".to_string()), "{vars:?}");
        assert!(templates.variables("{{ unclosed").is_err());
    }

    #[test]
    fn conditions_evaluate_to_booleans() {
        let templates = Templates::new();
        let ctx = scope(&json!({"nodes": {"a": {"output": {"first_name": null}}}}));
        assert_eq!(
            templates.eval_bool("nodes.a.output.first_name is not none", &ctx),
            Ok(false)
        );
        assert_eq!(
            templates.eval_bool("nodes.a.output.first_name is none", &ctx),
            Ok(true)
        );
    }
}

/// Bad input never crashes the process rendering it: limits with their errors, and
/// properties over arbitrary sources and scopes.
#[cfg(test)]
mod hardening {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::testing::json_value;

    fn render(source: &str, body: Value) -> Result<Value, TemplateError> {
        Templates::new().render_value(&json!(source), &scope(&json!({"trigger": {"body": body}})))
    }

    fn error(source: &str) -> String {
        render(source, json!({}))
            .expect_err("must be refused")
            .to_string()
    }

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

    #[test]
    fn long_operator_chains_are_refused_before_they_reach_the_parser() {
        let chain = format!("{{{{ x{} }}}}", ".a".repeat(5_000));
        assert!(
            error(&chain).contains("operators, over the limit of 256"),
            "{}",
            error(&chain)
        );
        let negations = format!("{}1", "- ".repeat(5_000));
        let found = Templates::new()
            .eval(&negations, &scope(&json!({})))
            .expect_err("refused");
        assert!(
            found.to_string().contains("over the limit of 256"),
            "{found}"
        );
        // Text outside tags and string literals inside them hold any number of symbols.
        let text = format!(
            "{}{{{{ '{}' }}}}{}",
            "-".repeat(5_000),
            "|".repeat(5_000),
            "=".repeat(5_000)
        );
        assert!(render(&text, json!({})).is_ok());
        // The count is per tag: many small tags are fine.
        let many = "{{ trigger.body.a | default(1) + 1 }}".repeat(200);
        assert!(render(&many, json!({"a": 1})).is_ok());
        // A tag does not end inside brackets, so a `}}` there hides nothing from the count.
        let hidden = format!("{{{{ [ }}}} {} ] }}}}", ".a".repeat(300));
        assert!(error(&hidden).contains("over the limit of 256"));
    }

    /// Renders `source` over a 64 KiB `trigger.body.s` and returns its error.
    fn refused_over_text(source: &str) -> String {
        render(source, json!({"s": "x".repeat(64 * 1024)}))
            .expect_err("must be refused")
            .to_string()
    }

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
    fn what_the_compiler_computes_ahead_is_bounded_at_save_time_too() {
        const EXPECTED: &str = "when it is compiled, over the limit of 1048576";
        let templates = Templates::new();
        for source in [
            "{{ ('x' * 100000000) | length }}",
            "{{ trigger.body ~ ('x' * 100000000) }}",
            "{{ ([1, 2, 3] * 100000000) | length }}",
            "{% set a = 'x' * 2000000 %}{{ a ~ a }}",
            "{{ ('x' * 600000 ~ 'y' * 600000) | length }}",
        ] {
            let found = error(source);
            assert!(found.contains(EXPECTED), "{source}: {found}");
            let at_save = templates
                .variables(source)
                .expect_err("refused at save time");
            assert!(at_save.to_string().contains(EXPECTED), "{at_save}");
        }
        let at_save = templates
            .expression_variables("'x' * 100000000 == ''")
            .expect_err("refused at save time");
        assert!(at_save.to_string().contains(EXPECTED), "{at_save}");
        // Small constants are folded as they always were.
        assert_eq!(
            render("{{ '-' * 3 ~ [1, 2] * 2 ~ 2 ** 10 }}", json!({})),
            Ok(json!("---[1, 2, 1, 2]1024"))
        );
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

    #[test]
    fn the_engine_has_no_macros_to_recurse_through() {
        let found = refused_over_text(
            "{% macro f(x) %}{{ f(x ~ x) }}{% endmacro %}{{ f(trigger.body.s) }}",
        );
        assert!(found.contains("unknown statement macro"), "{found}");
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

    /// A plain engine configured as [`Templates::new`] is, without the guards.
    fn unguarded() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL * 4));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.remove_global("namespace");
        env
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

    #[test]
    fn a_namespace_cannot_be_made_to_hold_itself() {
        let found = error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}");
        assert!(found.contains("namespace is unknown"), "{found}");
    }

    /// The engine negates a slice's step unchecked: an overflow panic in debug builds
    /// (release builds wrap), the one panic of it this test can trigger.
    #[cfg(debug_assertions)]
    #[test]
    fn a_panic_inside_the_engine_is_an_error_of_the_template() {
        let found = error("{{ 'abc'[::-9223372036854775808] }}");
        assert!(found.contains("template engine failed"), "{found}");
    }

    #[test]
    fn what_the_templates_of_one_value_render_is_bounded_in_all() {
        let body = json!({"s": "x".repeat(MAX_RENDERED_BYTES - 16)});
        let one = json!({"a": "{{ trigger.body.s }}"});
        let context = scope(&json!({"trigger": {"body": body}}));
        assert!(Templates::new().render_value(&one, &context).is_ok());
        let fields: serde_json::Map<String, Value> = (0..5)
            .map(|i| (format!("f{i}"), json!("{{ trigger.body.s }}")))
            .collect();
        let found = Templates::new()
            .render_value(&Value::Object(fields), &context)
            .expect_err("5 MiB in all");
        assert_eq!(
            found.to_string(),
            "the templates of this value render over 4194304 bytes in all, the limit"
        );
        let text = error(&format!("{{{{ x }}}}{}", "y".repeat(MAX_TEMPLATE_BYTES)));
        assert!(text.contains("over the limit of 65536"), "{text}");
        assert!(
            error("{{ 'x' * 2000000 }}").contains("over the limit of 1048576"),
            "a sole expression's value is bounded too"
        );
    }

    /// Pieces templates are made of, so that random sequences of them reach deep into
    /// the parser and the evaluator rather than failing on the first character.
    fn template_source() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            " ",
            " ",
            "trigger",
            "body",
            "nodes",
            "item",
            "run",
            "x",
            ".",
            "[",
            "]",
            "(",
            ")",
            ",",
            ":",
            "|",
            "0",
            "1",
            "-1",
            "2.5",
            "1e308",
            "100000000",
            "9223372036854775807",
            "'s'",
            "\"t\"",
            "'",
            "\"",
            "\\",
            "+",
            "-",
            "*",
            "/",
            "//",
            "%",
            "**",
            "~",
            "==",
            "!=",
            "<",
            ">=",
            "and",
            "or",
            "not",
            "is",
            "in",
            "none",
            "true",
            "defined",
            "number",
            "if",
            "else",
            "endif",
            "for",
            "endfor",
            "set",
            "=",
            "range",
            "upper",
            "length",
            "join",
            "replace",
            "indent",
            "tojson",
            "default",
            "int",
            "list",
            "batch",
            "slice",
            "format",
            "first",
            "sort",
            "namespace",
            "loop",
            "raw",
            "endraw",
            "with",
            "endwith",
            "filter",
            "endfilter",
            "\n",
            "\u{e9}",
        ];
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    fn check(source: &str, body: Value) -> Result<(), TestCaseError> {
        let templates = Templates::new();
        let context =
            scope(&json!({"trigger": {"body": body}, "nodes": {"a": {"output": [1, "x"]}}}));
        let outcomes = [
            templates.render_value(&json!(source), &context).map(|_| ()),
            templates.variables(source).map(|_| ()),
            templates.expression_variables(source).map(|_| ()),
            templates.eval_bool(source, &context).map(|_| ()),
        ];
        for outcome in outcomes {
            if let Err(e) = outcome {
                prop_assert!(!e.to_string().is_empty(), "an error says what failed");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_template_of_template_pieces_yields_a_value_or_an_error(
            source in template_source(),
            body in json_value(),
        ) {
            check(&source, body)?;
        }

        #[test]
        fn any_text_yields_a_value_or_an_error(source in any::<String>(), body in json_value()) {
            check(&source, body)?;
        }

        /// Fuel bounds time: however large the ranges, nested loops end with their output
        /// or an error naming what stopped them.
        #[test]
        fn nested_loops_end_in_their_output_or_a_named_limit(
            outer in prop_oneof![0u64..50, 0u64..10_000_000_000],
            inner in prop_oneof![0u64..50, 0u64..10_000_000_000],
        ) {
            let source = format!("{{% for i in range({outer}) %}}{{% for j in range({inner}) %}}x{{% endfor %}}{{% endfor %}}");
            match render(&source, json!({})) {
                Ok(Value::String(text)) => prop_assert_eq!(text.len() as u64, outer * inner),
                Ok(other) => prop_assert!(false, "a string was expected, not {}", other),
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(
                        message.contains("fuel") || message.contains("too many elements"),
                        "{}", message
                    );
                }
            }
        }

        /// The guards change what a template renders only by refusing it, and then for
        /// running out of fuel or passing a limit.
        #[test]
        fn the_guards_change_no_result_of_any_template(
            source in template_source(),
            body in json_value(),
        ) {
            prop_assume!(sole_expression(&source).is_none() && is_template(&source));
            let context = scope(&json!({"trigger": {"body": body}, "nodes": {"a": {"output": [1, "x"]}}}));
            let plain = unguarded().render_str(&source, context.clone());
            match (plain, Templates::new().render_value(&json!(source), &context)) {
                (Ok(expected), Ok(found)) => prop_assert_eq!(found, json!(expected)),
                (Err(e), Ok(found)) => prop_assert!(false, "only guarded, {} renders {}, not {}", source, found, e),
                (Ok(_), Err(e)) => {
                    let message = e.to_string();
                    prop_assert!(message.contains("fuel") || message.contains("limit"), "{}: {}", source, message);
                }
                (Err(_), Err(_)) => {}
            }
        }

        /// A string that is exactly one expression keeps the JSON value it reads.
        #[test]
        fn a_sole_expression_returns_the_value_it_reads(body in json_value()) {
            prop_assert_eq!(render("{{ trigger.body }}", body.clone()), Ok(body));
        }

        /// Chains of any operator and any length are refused or evaluated, never left to
        /// overflow the stack of a 2 MiB thread (tokio's worker threads have that much).
        #[test]
        fn operator_chains_of_any_length_stay_within_a_small_stack(
            piece in prop::sample::select(&[".a", "[0]", "()", "|abs", "+1", "~1", " and 1", "- ", "not ", "(", "["][..]),
            length in 0usize..4_000,
        ) {
            let prefix = matches!(piece, "- " | "not " | "(" | "[");
            let chain = piece.repeat(length);
            let source = if prefix { format!("{{{{ {chain}x }}}}") } else { format!("{{{{ x{chain} }}}}") };
            let finished = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let _ = Templates::new().render_value(&json!(source), &scope(&json!({"x": 1})));
                })
                .expect("thread starts")
                .join();
            prop_assert!(finished.is_ok());
        }
    }
}
