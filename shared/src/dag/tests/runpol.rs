//! Run-level keys: DAG `retryPolicy`, `delaySec`, `skipIfSuccessful`, `restartWaitSec`,
//! `schedule` with `start`/`stop`/`restart` and one-off `at` entries, `overlapPolicy: latest`.

use super::{assert_error, ok};
use crate::dag::{OverlapPolicy, RetryPolicy, RunPolicy};

const STEPS: &str = "steps:\n  - {name: a, command: 'true'}\n";

#[test]
fn dag_retry_policy_in_both_spellings_with_dagu_defaults() {
    for yaml in [
        format!("retry_policy: {{limit: 2}}\n{STEPS}"),
        format!("retryPolicy: {{limit: '2'}}\n{STEPS}"),
    ] {
        let dag = ok(&yaml);
        assert_eq!(
            dag.run_policy.retry,
            Some(RetryPolicy {
                limit: 2,
                interval_ms: 60_000,
                backoff_milli: 1000,
                max_interval_ms: Some(3_600_000),
                exit_codes: vec![],
            })
        );
    }
    let dag = ok(&format!(
        "retry_policy: {{limit: 3, interval_sec: 5, backoff: true, max_interval_sec: 12}}\n{STEPS}"
    ));
    let p = dag.run_policy.retry.unwrap();
    // Dagu: interval × backoff^(retries so far), capped.
    assert_eq!(
        (p.delay_ms(1), p.delay_ms(2), p.delay_ms(3)),
        (5_000, 10_000, 12_000)
    );
}

#[test]
fn dag_retry_policy_refusals_name_the_field_and_the_fix() {
    assert_error(
        &format!("retry_policy: {{interval_sec: 5}}\n{STEPS}"),
        "retry_policy.limit",
        "missing; give limit:",
    );
    assert_error(
        &format!("retry_policy: {{limit: 2, interval_sec: 0}}\n{STEPS}"),
        "retry_policy.interval_sec",
        "0 is not allowed (Dagu requires more than 0); give the wait before the run is retried",
    );
    assert_error(
        &format!("retry_policy: {{limit: -1}}\n{STEPS}"),
        "retry_policy.limit",
        "is negative",
    );
    assert_error(
        &format!("retry_policy: {{limit: 1, exitCode: [1]}}\n{STEPS}"),
        "retry_policy.exitCode",
        "unknown key \"exitCode\"",
    );
    assert_error(
        &format!("retry_policy: 3\n{STEPS}"),
        "retry_policy",
        "expected a map with limit:",
    );
    assert_error(
        &format!("retry_policy: {{limit: 1, backoff: 0.5}}\n{STEPS}"),
        "retry_policy.backoff",
        "would not grow the wait",
    );
}

#[test]
fn delay_restart_wait_and_skip_if_successful() {
    let dag = ok(&format!(
        "delay_sec: 3\nrestartWaitSec: 10\nskip_if_successful: true\n{STEPS}"
    ));
    assert_eq!(dag.run_policy.delay_ms, Some(3_000));
    assert_eq!(dag.run_policy.restart_wait_ms, Some(10_000));
    assert!(dag.run_policy.skip_if_successful);
    let dag = ok(&format!("delaySec: 0\nskipIfSuccessful: false\n{STEPS}"));
    assert!(dag.run_policy.is_unset());
    assert_error(
        &format!("delay_sec: 1.5\n{STEPS}"),
        "delay_sec",
        "1.5 is not a whole number of seconds; give the wait before the run's first step",
    );
    assert_error(
        &format!("delaySec: -2\n{STEPS}"),
        "delaySec",
        "-2 is negative",
    );
    assert_error(
        &format!("restart_wait_sec: soon\n{STEPS}"),
        "restart_wait_sec",
        "expected a whole number of seconds, found a string",
    );
    assert_error(
        &format!("skip_if_successful: yes please\n{STEPS}"),
        "skip_if_successful",
        "expected true or false, found a string",
    );
}

#[test]
fn schedule_map_with_stop_restart_and_one_off_entries() {
    let dag = ok(&format!(
        "schedule:\n  start:\n    - '0 8 * * *'\n    - {{expression: '0 9 * * *'}}\n    - {{at: '2026-03-01T09:00:00+09:00'}}\n  stop: '0 18 * * *'\n  restart: ['0 12 * * *']\n{STEPS}"
    ));
    assert_eq!(dag.schedule, vec!["0 8 * * *", "0 9 * * *"]);
    assert_eq!(dag.run_policy.stop, vec!["0 18 * * *"]);
    assert_eq!(dag.run_policy.restart, vec!["0 12 * * *"]);
    assert_eq!(dag.run_policy.at_ms, vec![1_772_323_200_000]);
    // A plain list takes typed entries too.
    let dag = ok(&format!(
        "schedule:\n  - {{kind: at, at: '2026-03-01T00:00:00Z'}}\n  - {{kind: cron, expression: '5 * * * *'}}\n{STEPS}"
    ));
    assert_eq!(dag.schedule, vec!["5 * * * *"]);
    assert_eq!(dag.run_policy.at_ms, vec![1_772_323_200_000]);
}

#[test]
fn schedule_refusals_name_the_field_and_the_fix() {
    assert_error(
        &format!("schedule:\n  stop: '0 99 * * *'\n{STEPS}"),
        "schedule.stop",
        "",
    );
    assert_error(
        &format!("schedule:\n  restart: [{{at: '2026-03-01T09:00:00Z'}}]\n{STEPS}"),
        "schedule.restart[0].at",
        "one-off entries are only for starting the DAG",
    );
    assert_error(
        &format!("schedule:\n  begin: '0 * * * *'\n{STEPS}"),
        "schedule.begin",
        "unknown key \"begin\"; a schedule map takes start:, stop: and restart:",
    );
    assert_error(
        &format!("schedule: [{{at: '2026-03-01 09:00'}}]\n{STEPS}"),
        "schedule[0].at",
        "is not an RFC 3339 time with an offset",
    );
    assert_error(
        &format!("schedule: [{{at: '2026-03-01T09:00:00Z', expression: '* * * * *'}}]\n{STEPS}"),
        "schedule[0]",
        "give expression: or at:, not both",
    );
    assert_error(
        &format!("schedule: [{{kind: weekly, expression: '* * * * *'}}]\n{STEPS}"),
        "schedule[0].kind",
        "\"weekly\" is not a schedule kind; use cron or at",
    );
}

#[test]
fn overlap_latest_is_accepted() {
    let dag = ok(&format!("overlap_policy: latest\n{STEPS}"));
    assert_eq!(dag.overlap, OverlapPolicy::Latest);
}

#[test]
fn a_dag_without_run_level_keys_encodes_as_before() {
    let dag = ok(STEPS);
    assert_eq!(dag.run_policy, RunPolicy::default());
    let named = rmp_serde::to_vec_named(&dag).unwrap();
    let text = String::from_utf8_lossy(&named);
    assert!(!text.contains("run_policy"), "run_policy encoded: {text}");
    let with = ok(&format!("delay_sec: 1\n{STEPS}"));
    let back: crate::dag::Dag =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&with).unwrap()).unwrap();
    assert_eq!(back, with);
}
