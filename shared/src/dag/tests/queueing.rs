//! The queueing and scheduling keys: priority, queue, limits, dedup, schedule and its options.

use super::{assert_error, ok};
use crate::dag::{DedupPolicy, OverlapPolicy, Priority};

const STEPS: &str = "steps:\n  - {name: a, command: 'true'}\n";

#[test]
fn queueing_keys_parse_in_both_spellings() {
    let dag = ok(&format!(
        "priority: high\nqueue: batch\nmaxActiveRuns: 2\nmax_active_steps: 3\ndedup: {{window: 24h}}\n\
         schedule: ['0 * * * *', 'CRON_TZ=Asia/Tokyo 30 9 * * 1-5']\ntimezone: Europe/Paris\n\
         catchup_window: 6h\noverlapPolicy: all\n{STEPS}"
    ));
    assert_eq!(dag.priority, Some(Priority::HIGH));
    assert_eq!(dag.queue.as_deref(), Some("batch"));
    assert_eq!(dag.max_active_runs, Some(2));
    assert_eq!(dag.max_active_steps, Some(3));
    assert_eq!(dag.dedup, Some(DedupPolicy::Window(24 * 3600 * 1000)));
    assert_eq!(dag.schedule.len(), 2);
    assert_eq!(dag.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(dag.catchup_window_ms, Some(6 * 3600 * 1000));
    assert_eq!(dag.overlap, OverlapPolicy::All);
}

#[test]
fn defaults_when_absent() {
    let dag = ok(STEPS);
    assert_eq!(dag.priority, None);
    assert_eq!(dag.dedup, None);
    assert!(dag.schedule.is_empty());
    assert_eq!(dag.overlap, OverlapPolicy::Skip);
}

#[test]
fn numeric_priority_and_dedup_strings() {
    let dag = ok(&format!("priority: 7\ndedup: none\n{STEPS}"));
    assert_eq!(dag.priority, Priority::new(7));
    assert_eq!(dag.dedup, Some(DedupPolicy::None));
    let dag = ok(&format!("dedup: window:90s\n{STEPS}"));
    assert_eq!(dag.dedup, Some(DedupPolicy::Window(90_000)));
}

#[test]
fn negative_limit_means_no_limit_as_in_dagu() {
    let dag = ok(&format!("maxActiveRuns: -1\n{STEPS}"));
    assert_eq!(dag.max_active_runs, None);
}

#[test]
fn schedule_map_takes_start() {
    let dag = ok(&format!("schedule:\n  start: '5 4 * * *'\n{STEPS}"));
    assert_eq!(dag.schedule, vec!["5 4 * * *".to_string()]);
}

#[test]
fn bad_values_name_the_field_and_the_fix() {
    assert_error(
        &format!("priority: urgent\n{STEPS}"),
        "priority",
        "\"urgent\" is not a priority; use high, normal, low or a number from 0 to 9 (higher runs first)",
    );
    assert_error(
        &format!("priority: 12\n{STEPS}"),
        "priority",
        "\"12\" is not a priority; use high, normal, low or a number from 0 to 9 (higher runs first)",
    );
    assert_error(
        &format!("dedup: sometimes\n{STEPS}"),
        "dedup",
        "\"sometimes\" is not a dedup policy; use active, none or window:<duration> (for example window:24h)",
    );
    assert_error(
        &format!("queue: 'a b'\n{STEPS}"),
        "queue",
        "\"a b\" is not a valid queue name",
    );
    assert_error(
        &format!("maxActiveRuns: two\n{STEPS}"),
        "maxActiveRuns",
        "expected a positive integer, found a string",
    );
    assert_error(
        &format!("schedule: '* * *'\n{STEPS}"),
        "schedule",
        "has 3 fields",
    );
    assert_error(
        &format!("schedule: ['0 * * * *', 'CRON_TZ=Mars/Base 0 * * * *']\n{STEPS}"),
        "schedule[1]",
        "\"Mars/Base\" is not an IANA time zone",
    );
    assert_error(
        &format!("timezone: Nowhere\n{STEPS}"),
        "timezone",
        "is not an IANA time zone",
    );
    assert_error(
        &format!("overlapPolicy: newest\n{STEPS}"),
        "overlapPolicy",
        "\"newest\" is not an overlap policy; use skip (the default), all or latest",
    );
    assert_error(
        &format!("catchupWindow: soon\n{STEPS}"),
        "catchupWindow",
        "is not a duration",
    );
}
