//! A render's memory stays within `MAX_RENDER_MEMORY` whatever its template does.
//!
//! Measured, not assumed: this test binary replaces the allocator with one that counts
//! the bytes held, and the most held, so the peak of a render is what it really
//! allocated. Each template below is refused naming the limit; without the guards
//! the same renders hold hundreds of MiB and this test fails on their peaks.

use std::sync::{Mutex, MutexGuard};

use peak_alloc::PeakAlloc;
use serde_json::{Value, json};
use weft_domain::scenario::{BuiltinCatalog, Scenario};
use weft_domain::template::{MAX_RENDER_MEMORY, Templates, scope};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The allocator counts for the whole process: the tests measure one at a time.
static MEASURING: Mutex<()> = Mutex::new(());

fn measuring() -> MutexGuard<'static, ()> {
    MEASURING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `run` returns, and the most bytes held during it beyond what was held before.
fn peak_of<T>(run: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let result = run();
    (result, ALLOCATOR.peak_usage().saturating_sub(before))
}

const MIB: usize = 1 << 20;

/// The most a render may hold: its budget counts each value once, and while the engine
/// builds a text it holds it twice for a moment (it writes it, with room to grow, then
/// copies it into the value).
const MOST_HELD: usize = 2 * MAX_RENDER_MEMORY;

/// Templates that grow a value over and over, each a different way; without the guards
/// each holds hundreds of MiB (over a 64 KiB text) before its end.
fn hostile() -> Vec<String> {
    let again = |step: &str, times: usize| step.repeat(times);
    let chained: String = (0..12)
        .map(|i| format!("{{% set a{} = a{i} ~ a{i} %}}", i + 1))
        .collect();
    let ranges: String = (0..30)
        .map(|i| format!("{{% set r{i} = range(100000) | list %}}"))
        .collect();
    vec![
        format!(
            "{{% set a = trigger.body.s %}}{}{{{{ a | length }}}}",
            again("{% set a = a ~ a %}", 13)
        ),
        format!("{{% set a0 = trigger.body.s %}}{chained}{{{{ a12 | length }}}}"),
        format!(
            "{{% for a in [trigger.body.s] %}}{}{{{{ a | length }}}}{}{{% endfor %}}",
            again("{% for a in [a ~ a] %}", 12),
            again("{% endfor %}", 12)
        ),
        format!(
            "{{% set a %}}{{{{ trigger.body.s }}}}{{% endset %}}{}{{{{ a | length }}}}",
            again("{% set a %}{{ a }}{{ a }}{% endset %}", 12)
        ),
        "{% filter upper %}{% for i in range(4000) %}{{ trigger.body.s }}{% endfor %}{% endfilter %}".into(),
        format!(
            "{{% set l = [trigger.body.s] %}}{}{{{{ l | join | length }}}}",
            again("{% set l = l + l %}", 13)
        ),
        "{{ (trigger.body.s * 1500) | length }}".into(),
        format!(
            "{{% set l = trigger.body.s %}}{}{{{{ l | tojson | length }}}}",
            again("{% set l = [l, l, l, l, l, l, l, l] %}", 4)
        ),
        format!(
            "{{% set m = trigger.body.s %}}{}{{{{ m | tojson | length }}}}",
            again("{% set m = {'a': m, 'b': m} %}", 12)
        ),
        format!("{ranges}{{{{ r0 | length }}}}"),
    ]
}

#[test]
fn hostile_templates_are_refused_within_the_render_budget() {
    let _one_at_a_time = measuring();
    let templates = Templates::new();
    let context = scope(&json!({"trigger": {"body": {"s": "x".repeat(64 * 1024)}}}));
    for source in hostile() {
        let (rendered, peak) = peak_of(|| templates.render_value(&json!(source), &context));
        assert!(
            peak <= MOST_HELD,
            "{source} held {} MiB at its peak, over twice the budget of {} MiB",
            peak / MIB,
            MAX_RENDER_MEMORY / MIB
        );
        let error = rendered.expect_err("refused").to_string();
        assert!(
            error.contains(&format!("the limit of {MAX_RENDER_MEMORY} bytes")),
            "{source}: {error}"
        );
    }
}

/// The compiler computes constant expressions before any guard runs: bounded from the
/// syntax tree, so refused before it allocates.
#[test]
fn a_constant_expression_is_refused_before_it_is_computed() {
    let _one_at_a_time = measuring();
    let templates = Templates::new();
    let (rendered, peak) = peak_of(|| {
        templates.render_value(
            &json!("{{ ('x' * 90000000) | length }}"),
            &scope(&json!({})),
        )
    });
    let error = rendered.expect_err("refused").to_string();
    assert!(error.contains("over the limit of 1048576"), "{error}");
    assert!(peak < MIB, "held {peak} bytes at its peak");
}

/// Users learn of it when they save the scenario, not when it runs.
#[test]
fn a_scenario_with_such_a_constant_is_invalid_at_save_time() {
    let _one_at_a_time = measuring();
    let definition = json!({"name": "t", "trigger": {"type": "manual"}, "nodes": [
        {"id": "a", "type": "transform", "output": {"x": "{{ ('x' * 90000000) | length }}"}}
    ]});
    let (parsed, peak) = peak_of(|| Scenario::parse(&definition, &BuiltinCatalog));
    let invalid = parsed.expect_err("invalid").to_string();
    assert!(
        invalid.starts_with("node `a`, field `output.x`: template does not parse:")
            && invalid.contains("over the limit of 1048576"),
        "{invalid}"
    );
    assert!(peak < MIB, "held {peak} bytes at its peak");
}

/// A mapping over a large input builds what it needs, well within the budget.
#[test]
fn a_real_mapping_over_a_large_input_renders() {
    let _one_at_a_time = measuring();
    let items: Vec<Value> = (0..3_000)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "price": i % 97, "qty": 3, "tags": ["a", "b"]}))
        .collect();
    let context = scope(&json!({"trigger": {"body": {"items": items}}}));
    let mapping = json!({
        "lines": "{% for item in trigger.body.items %}{{ item.name | upper }}: {{ item.price * item.qty }} [{{ item.tags | join(',') }}]\n{% endfor %}",
        "total": "{{ trigger.body.items | map(attribute='price') | sum }}",
        "names": "{{ trigger.body.items | selectattr('price', 'gt', 90) | map(attribute='name') | list }}",
    });
    let (rendered, peak) = peak_of(|| Templates::new().render_value(&mapping, &context));
    let rendered = rendered.expect("renders");
    assert_eq!(
        rendered["lines"]
            .as_str()
            .map(|lines| lines.lines().count()),
        Some(3_000)
    );
    assert_eq!(
        rendered["total"],
        json!((0..3_000).map(|i| i % 97).sum::<i64>())
    );
    assert!(peak <= MAX_RENDER_MEMORY, "held {} MiB", peak / MIB);
}
