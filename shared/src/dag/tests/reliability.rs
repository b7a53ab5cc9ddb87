//! Retries, timeouts and stopping: step `retryPolicy`, `timeoutSec`, `signalOnStop`, and the
//! DAG's `timeoutSec` and `maxCleanUpTimeSec`, in both key styles, and one test per error.

use super::{assert_error, ok};
use crate::dag::{RetryPolicy, Step};

/// A DAG whose only step has the extra keys `step` (flow-map entries, e.g. `timeoutSec: 5`).
fn with_step(step: &str) -> String {
    format!("steps:\n  - {{name: a, command: 'true', {step}}}\n")
}

/// The only step of a DAG parsed from [`with_step`].
fn step(extra: &str) -> Step {
    ok(&with_step(extra)).steps.remove(0)
}

/// The retry policy of the only step, which must have one.
fn policy(retry: &str) -> RetryPolicy {
    match step(&format!("retryPolicy: {retry}")).retry {
        Some(policy) => policy,
        None => panic!("expected a retry policy from {retry}"),
    }
}

/// Expect an error at `steps[0].<field>` containing `phrase` for the step keys `extra`.
fn step_error(extra: &str, field: &str, phrase: &str) {
    assert_error(&with_step(extra), &format!("steps[0].{field}"), phrase);
}

const V1: &str = r#"
timeoutSec: 3600
maxCleanUpTimeSec: 10
steps:
  - name: load
    command: ./load.sh
    timeoutSec: 600
    signalOnStop: SIGINT
    retryPolicy:
      limit: 3
      intervalSec: 30
      backoff: true
      maxIntervalSec: 300
      exitCode: [1, 2]
"#;

const V2: &str = r#"
timeout_sec: 60
max_clean_up_time_sec: 0
steps:
  - name: load
    command: ./load.sh
    timeout_sec: 5
    signal_on_stop: hup
    retry_policy:
      limit: "2"
      interval_sec: 1.5
      backoff: 1.5
      max_interval_sec: 60
      exit_code: 3
"#;

#[test]
fn v1_keys_parse() {
    let dag = ok(V1);
    assert_eq!(dag.timeout_ms, Some(3_600_000));
    assert_eq!(dag.max_cleanup_ms, Some(10_000));
    let load = &dag.steps[0];
    assert_eq!(load.timeout_ms, Some(600_000));
    assert_eq!(load.signal_on_stop.as_deref(), Some("SIGINT"));
    let expected = RetryPolicy {
        limit: 3,
        interval_ms: 30_000,
        backoff_milli: 2000,
        max_interval_ms: Some(300_000),
        exit_codes: vec![1, 2],
    };
    assert_eq!(load.retry, Some(expected));
}

#[test]
fn v2_keys_parse() {
    let dag = ok(V2);
    assert_eq!(dag.timeout_ms, Some(60_000));
    assert_eq!(
        dag.max_cleanup_ms,
        Some(0),
        "0 is a real grace: SIGKILL at once"
    );
    let load = &dag.steps[0];
    assert_eq!(load.timeout_ms, Some(5_000));
    assert_eq!(load.signal_on_stop.as_deref(), Some("SIGHUP"));
    let expected = RetryPolicy {
        limit: 2,
        interval_ms: 1_500,
        backoff_milli: 1500,
        max_interval_ms: Some(60_000),
        exit_codes: vec![3],
    };
    assert_eq!(load.retry, Some(expected));
}

#[test]
fn parsed_policy_drives_the_waits() {
    let retry = ok(V1).steps[0].retry.clone().expect("a policy");
    assert_eq!(retry.delay_ms(1), 30_000);
    assert_eq!(retry.delay_ms(2), 60_000);
    assert_eq!(retry.delay_ms(4), 240_000);
    assert_eq!(retry.delay_ms(5), 300_000, "capped by maxIntervalSec");
    assert!(retry.retries_exit(Some(2)));
    assert!(!retry.retries_exit(Some(3)));
}

#[test]
fn absent_and_null_keys_leave_the_defaults() {
    let dag = ok(&with_step("description: x"));
    assert_eq!(dag.timeout_ms, None);
    assert_eq!(dag.max_cleanup_ms, None);
    let plain = &dag.steps[0];
    assert_eq!(
        (&plain.retry, plain.timeout_ms, &plain.signal_on_stop),
        (&None, None, &None)
    );
    let nulls = step("retryPolicy: null, timeoutSec: null, signalOnStop: null");
    assert_eq!(
        (&nulls.retry, nulls.timeout_ms, &nulls.signal_on_stop),
        (&None, None, &None)
    );
    let dag = ok(&format!(
        "timeoutSec:\nmaxCleanUpTimeSec:\n{}",
        with_step("")
    ));
    assert_eq!((dag.timeout_ms, dag.max_cleanup_ms), (None, None));
}

#[test]
fn retry_policy_defaults() {
    let only_limit = policy("{limit: 0}");
    let expected = RetryPolicy {
        limit: 0,
        interval_ms: 0,
        backoff_milli: 1000,
        max_interval_ms: None,
        exit_codes: vec![],
    };
    assert_eq!(
        only_limit, expected,
        "limit 0 keeps a policy that never retries"
    );
    assert_eq!(policy("{limit: 1, backoff: false}").backoff_milli, 1000);
    assert_eq!(
        policy("{limit: 1, backoff: 0}").backoff_milli,
        1000,
        "Dagu reads 0 as no backoff"
    );
    assert_eq!(policy("{limit: 1, backoff: 3}").backoff_milli, 3000);
    assert_eq!(
        policy("{limit: 1, maxIntervalSec: 0}").max_interval_ms,
        None
    );
    assert_eq!(
        policy("{limit: 1, exitCode: []}").exit_codes,
        Vec::<i32>::new()
    );
    assert_eq!(
        policy("{limit: 1, exitCode: [2, 1, 2]}").exit_codes,
        vec![2, 1]
    );
}

#[test]
fn numbers_in_strings_where_dagu_substitutes_variables() {
    let retry = policy("{limit: ' 4 ', intervalSec: '2.5'}");
    assert_eq!((retry.limit, retry.interval_ms), (4, 2_500));
    assert_eq!(policy("{limit: 1, intervalSec: 0.0004}").interval_ms, 0);
    assert_eq!(policy("{limit: 2.0}").limit, 2, "a whole float is whole");
}

#[test]
fn zero_timeout_means_none_as_in_dagu() {
    assert_eq!(step("timeoutSec: 0").timeout_ms, None);
    assert_eq!(
        ok(&format!("timeout_sec: 0\n{}", with_step(""))).timeout_ms,
        None
    );
}

#[test]
fn signal_names_are_normalised() {
    for (written, normal) in [
        ("SIGTERM", "SIGTERM"),
        ("term", "SIGTERM"),
        ("SigInt", "SIGINT"),
        ("' quit '", "SIGQUIT"),
        ("usr1", "SIGUSR1"),
        ("SIGUSR2", "SIGUSR2"),
        ("alrm", "SIGALRM"),
        ("sigabrt", "SIGABRT"),
        ("KILL", "SIGKILL"),
    ] {
        let parsed = step(&format!("signalOnStop: {written}")).signal_on_stop;
        assert_eq!(parsed.as_deref(), Some(normal), "{written}");
    }
}

#[test]
fn retry_policy_must_be_a_map() {
    step_error(
        "retryPolicy: 3",
        "retryPolicy",
        "expected a map with limit: (and optionally intervalSec:",
    );
}

#[test]
fn retry_limit_is_required() {
    step_error(
        "retryPolicy: {intervalSec: 5}",
        "retryPolicy.limit",
        "missing; give limit: (the most retries after the first attempt",
    );
    step_error(
        "retry_policy: {limit: null}",
        "retry_policy.limit",
        "missing; give limit: (the most retries after the first attempt",
    );
}

#[test]
fn bad_retry_limits() {
    let cases = [
        (
            "-1",
            "-1 is negative; give the most retries as a whole number",
        ),
        ("1.5", "1.5 is not a whole number"),
        ("'three'", "\"three\" is not a number; write a number"),
        ("''", "\"\" is not a number"),
        ("4294967296", "is too large (at most 4294967295)"),
        (
            "true",
            "expected a whole number of retries, found a boolean",
        ),
    ];
    for (limit, phrase) in cases {
        let extra = format!("retryPolicy: {{limit: {limit}}}");
        step_error(&extra, "retryPolicy.limit", phrase);
    }
}

#[test]
fn variables_in_retry_numbers_are_refused_with_the_fix() {
    let phrase = "is substituted at run time in Dagu, but dagrid needs a literal number when the \
                  DAG is submitted; write the number itself";
    step_error(
        "retryPolicy: {limit: '${RETRIES}'}",
        "retryPolicy.limit",
        phrase,
    );
    step_error(
        "retryPolicy: {limit: $RETRIES}",
        "retryPolicy.limit",
        phrase,
    );
    step_error(
        "retry_policy: {limit: 1, interval_sec: '`cat wait`'}",
        "retry_policy.interval_sec",
        phrase,
    );
}

#[test]
fn bad_retry_intervals() {
    let field = "retryPolicy.intervalSec";
    step_error(
        "retryPolicy: {limit: 1, intervalSec: -5}",
        field,
        "-5 is negative; give the wait before a retry in seconds",
    );
    step_error(
        "retryPolicy: {limit: 1, intervalSec: soon}",
        field,
        "\"soon\" is not a number",
    );
    step_error(
        "retryPolicy: {limit: 1, intervalSec: .inf}",
        field,
        "is not a finite number",
    );
    step_error(
        "retryPolicy: {limit: 1, intervalSec: [1]}",
        field,
        "expected a number of seconds, found a list",
    );
    let field = "retryPolicy.maxIntervalSec";
    step_error(
        "retryPolicy: {limit: 1, maxIntervalSec: -1}",
        field,
        "-1 is negative; give the longest wait between retries in seconds",
    );
    step_error(
        "retryPolicy: {limit: 1, maxIntervalSec: '60'}",
        field,
        "expected a number of seconds, found the string \"60\"; remove the quotes",
    );
}

#[test]
fn bad_backoffs() {
    let cases = [
        (
            "0.8",
            "0.8 would not grow the wait (Dagu requires a factor greater than 1)",
        ),
        ("1", "1 would not grow the wait"),
        ("-2", "-2 is not a growth factor"),
        (
            "1.0004",
            "is too close to 1 (dagrid keeps three decimals, so at least 1.001)",
        ),
        ("5000", "5000 is too large (at most 1000)"),
        (
            "yes",
            "expected true, false or a number greater than 1, found a string",
        ),
    ];
    for (backoff, phrase) in cases {
        let extra = format!("retryPolicy: {{limit: 1, backoff: {backoff}}}");
        step_error(&extra, "retryPolicy.backoff", phrase);
    }
    step_error(
        "retryPolicy: {limit: 1, backoff: 0.5}",
        "retryPolicy.backoff",
        "use true (the wait doubles each retry), false (a fixed wait) or a factor greater than 1",
    );
}

#[test]
fn bad_exit_codes() {
    let phrase = "is not an exit code; write whole numbers from 0 to 255";
    step_error(
        "retryPolicy: {limit: 1, exitCode: 256}",
        "retryPolicy.exitCode",
        &format!("256 {phrase}"),
    );
    step_error(
        "retry_policy: {limit: 1, exit_code: [1, -1]}",
        "retry_policy.exit_code[1]",
        &format!("-1 {phrase}"),
    );
    step_error(
        "retryPolicy: {limit: 1, exitCode: [1, x]}",
        "retryPolicy.exitCode[1]",
        "expected an exit code (0 to 255), found a string",
    );
    step_error(
        "retryPolicy: {limit: 1, exitCode: {a: 1}}",
        "retryPolicy.exitCode",
        "expected an exit code or a list of them (0 to 255), found a map",
    );
}

#[test]
fn unknown_and_doubled_retry_keys() {
    step_error(
        "retryPolicy: {limit: 1, intervalSecs: 5}",
        "retryPolicy.intervalSecs",
        "unknown key \"intervalSecs\"; did you mean \"intervalSec\"?",
    );
    step_error(
        "retryPolicy: {limit: 1, frobnicate: 5}",
        "retryPolicy.frobnicate",
        "unknown key \"frobnicate\"; valid keys here: limit, intervalSec, interval_sec, backoff",
    );
    step_error(
        "retryPolicy: {limit: 1, intervalSec: 1, interval_sec: 2}",
        "retryPolicy.interval_sec",
        "\"intervalSec\" and \"interval_sec\" are two spellings of the same key; keep one",
    );
    step_error(
        "retryPolicy: {limit: 1}, retry_policy: {limit: 2}",
        "retry_policy",
        "two spellings of the same key",
    );
}

#[test]
fn bad_step_timeouts() {
    let fix = "give the timeout in whole seconds (for example 600), or 0 for none";
    step_error(
        "timeoutSec: -1",
        "timeoutSec",
        &format!("-1 is negative; {fix}"),
    );
    step_error(
        "timeout_sec: 1.5",
        "timeout_sec",
        "1.5 is not a whole number of seconds",
    );
    step_error(
        "timeoutSec: '30'",
        "timeoutSec",
        "expected a whole number of seconds, found the string \"30\"; remove the quotes",
    );
    step_error(
        "timeoutSec: 10m",
        "timeoutSec",
        "expected a whole number of seconds, found a string",
    );
    step_error(
        "timeoutSec: 4294967296",
        "timeoutSec",
        "is too many seconds (at most 4294967295, about 136 years)",
    );
    step_error(
        "timeoutSec: 1, timeout_sec: 2",
        "timeout_sec",
        "two spellings of the same key",
    );
}

#[test]
fn bad_dag_timeouts_and_cleanup() {
    let steps = with_step("");
    assert_error(
        &format!("timeoutSec: -5\n{steps}"),
        "timeoutSec",
        "-5 is negative; give the timeout in whole seconds",
    );
    assert_error(
        &format!("max_clean_up_time_sec: -1\n{steps}"),
        "max_clean_up_time_sec",
        "-1 is negative; give the grace in whole seconds (for example 5, the default; 0 kills at once)",
    );
    assert_error(
        &format!("maxCleanUpTimeSec: 2.5\n{steps}"),
        "maxCleanUpTimeSec",
        "2.5 is not a whole number of seconds",
    );
    assert_error(
        &format!("maxCleanUpTimeSec: later\n{steps}"),
        "maxCleanUpTimeSec",
        "expected a whole number of seconds, found a string",
    );
}

#[test]
fn bad_signals() {
    let accepted = "use one of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, \
                    SIGABRT, SIGKILL";
    step_error(
        "signalOnStop: SIGSTOP",
        "signalOnStop",
        &format!("SIGSTOP is not a signal dagrid stops steps with; {accepted}"),
    );
    step_error(
        "signal_on_stop: segv",
        "signal_on_stop",
        "SIGSEGV is not a signal dagrid stops steps with",
    );
    step_error(
        "signalOnStop: SIGTREM",
        "signalOnStop",
        "\"SIGTREM\" is not a signal name; did you mean SIGTERM?",
    );
    step_error(
        "signalOnStop: BANANA",
        "signalOnStop",
        &format!("\"BANANA\" is not a signal name; {accepted}"),
    );
    step_error(
        "signalOnStop: ''",
        "signalOnStop",
        "is empty; name a signal such as SIGTERM, or remove the key",
    );
    step_error(
        "signalOnStop: [SIGTERM]",
        "signalOnStop",
        "expected a signal name such as SIGTERM, found a list",
    );
}

#[test]
fn signal_numbers_are_refused_with_the_name() {
    step_error(
        "signalOnStop: 15",
        "signalOnStop",
        "15 is a signal number; write the name instead, SIGTERM (numbers differ between \
         systems, names do not)",
    );
    step_error(
        "signalOnStop: '9'",
        "signalOnStop",
        "\"9\" is a signal number; write the name instead, SIGKILL",
    );
    step_error(
        "signalOnStop: 19",
        "signalOnStop",
        "19 is a signal number; write a signal name instead, one of SIGTERM, SIGINT",
    );
}
