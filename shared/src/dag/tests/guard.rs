//! Hostile input: file size, flow-nesting depth, NUL bytes, param value sizes, out-of-range
//! numbers and durations.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::super::{Dag, MAX_DAG_BYTES, MAX_PARAM_VALUE_BYTES};
use super::{assert_error, errors, ok};

const STEPS: &str = "steps:\n  - {name: a, command: 'true'}\n";

/// Parse `yaml`, expect a refusal whose message contains `phrase`, within `limit`.
fn refused_fast(yaml: &str, phrase: &str, limit: Duration) {
    let begin = Instant::now();
    let found = errors(yaml);
    let took = begin.elapsed();
    assert!(
        found.iter().any(|e| e.message.contains(phrase)),
        "no error containing {phrase:?}: {found:?}"
    );
    assert!(took < limit, "refusing took {took:?}");
}

#[test]
fn deep_flow_nesting_is_refused_before_parsing() {
    // Before the depth scan each of these took seconds (the YAML parser's cost is depth times
    // line length): 200 KB of `{a: ` took 21 s in a debug build.
    for unit in ["[", "{", "{a: ", "[a, ", "- [", "{a: ["] {
        let body = unit.repeat(200_000 / unit.len());
        refused_fast(&body, "nested more than 64 levels", Duration::from_secs(1));
    }
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let body = format!("{STEPS}# {}\n", "x".repeat(MAX_DAG_BYTES));
    refused_fast(&body, "at most 1048576 bytes", Duration::from_secs(1));
}

#[test]
fn brackets_in_text_scripts_and_comments_do_not_count() {
    let deep = "[".repeat(100);
    let yaml = format!(
        "# {deep}\ndescription: 'a {deep} b'\nsteps:\n  - name: a\n    command: echo {deep}\n  \
         - name: b\n    script: |\n      if [ -f x ]; then echo \"{deep}\"; fi\n      [[ -n y ]]\n"
    );
    ok(&yaml);
    // Honest flow nesting within the limit parses.
    let nested = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    ok(&format!("env:\n  - X: '{nested}'\ndescription: x\n{STEPS}"));
}

#[test]
fn nul_bytes_are_refused_where_they_are() {
    assert_error(
        "steps:\n  - {name: a, command: \"echo a\\0b\"}\n",
        "steps[0].command",
        "NUL byte",
    );
    assert_error(
        &format!("env:\n  - X: \"a\\0\"\n{STEPS}"),
        "env[0].X",
        "NUL byte",
    );
    assert_error(
        &format!("params: \"A=x\\0\"\n{STEPS}"),
        "params",
        "NUL byte",
    );
}

#[test]
fn param_defaults_are_bounded() {
    let big = "x".repeat(MAX_PARAM_VALUE_BYTES + 1);
    assert_error(
        &format!("params:\n  - BIG: {big}\n{STEPS}"),
        "params.BIG",
        "bytes; a param value is at most 32768 bytes",
    );
}

fn given(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn bound_values_are_checked() {
    let dag = ok(&format!("params: A=1 B=2 C=3\n{STEPS}"));
    let nul = dag
        .bind_params(&given(&[("A", "a\0b".into())]))
        .unwrap_err();
    assert_eq!(nul.0[0].field, "params.A");
    assert!(nul.0[0].message.contains("NUL byte"), "{nul}");
    let big = dag
        .bind_params(&given(&[("B", "x".repeat(128 * 1024))]))
        .unwrap_err();
    assert_eq!(big.0[0].field, "params.B");
    assert!(big.0[0].message.contains("131072 bytes"), "{big}");
    let each = "x".repeat(MAX_PARAM_VALUE_BYTES);
    let total = dag
        .bind_params(&given(&[
            ("A", each.clone()),
            ("B", each.clone()),
            ("C", each.clone()),
        ]))
        .unwrap_err();
    assert_eq!(total.0[0].field, "params");
    assert!(total.0[0].message.contains("65536 bytes"), "{total}");
    assert!(dag.bind_params(&given(&[("A", each)])).is_ok());
}

#[test]
fn negative_and_huge_limits_are_refused() {
    assert_error(
        &format!("maxActiveRuns: -5\n{STEPS}"),
        "maxActiveRuns",
        "-5 is negative; use a positive integer, or 0 or -1 for no limit",
    );
    assert_error(
        &format!("maxActiveSteps: 18446744073709551615\n{STEPS}"),
        "maxActiveSteps",
        "too large",
    );
    assert_error(
        &format!("maxActiveRuns: 4294967296\n{STEPS}"),
        "maxActiveRuns",
        "too large",
    );
    assert_eq!(
        ok(&format!("maxActiveRuns: 0\n{STEPS}")).max_active_runs,
        None
    );
}

#[test]
fn durations_are_bounded() {
    assert_error(
        &format!("dedup: window:8000y\n{STEPS}"),
        "dedup",
        "the dedup window is at most 3650 days",
    );
    assert_error(
        &format!("dedup: window:18446744073709551615s\n{STEPS}"),
        "dedup",
        "at most 3650 days",
    );
    assert_error(
        &format!("catchupWindow: 18446744073709551615s\n{STEPS}"),
        "catchupWindow",
        "is too long; a duration is at most 3650 days",
    );
}

#[test]
fn no_name_and_no_default_name() {
    let found = Dag::parse(STEPS, "").unwrap_err();
    assert_eq!(found.0[0].field, "name");
    assert!(
        found.0[0].message.contains("the DAG has no name"),
        "{found}"
    );
}

#[test]
fn a_growing_retry_wait_stops_at_the_duration_bound() {
    let dag = ok("steps:\n  - name: a\n    command: 'true'\n    retryPolicy: {limit: 100, intervalSec: 86400, backoff: 1000}\n");
    let retry = dag.steps[0].retry.as_ref().expect("retry policy");
    assert_eq!(retry.delay_ms(1), 86_400_000);
    assert_eq!(retry.delay_ms(100), crate::duration::MAX_DURATION_MS);
}
