//! Run-level keys of the top level (Dagu `internal/core/spec/dag.go`): `retryPolicy` (retry a
//! failed run), `delaySec`, `skipIfSuccessful`, `restartWaitSec`, and `schedule` with its
//! `start`/`stop`/`restart` lists and one-off `at` entries (`spec/types/schedule.go`,
//! `core/schedule.go`). They fill [`RunPolicy`]; the start expressions stay in
//! [`super::Dag::schedule`].

use serde_yaml::{Mapping, Value};

use super::reliability::{self, Fraction, PolicyForm, Strings};
use super::report::{child, item, Report};
use super::value::{kind, type_error};
use super::yaml_keys::DAG_RETRY_POLICY;
use super::{RetryPolicy, RunPolicy};

/// Dagu's default `retry_policy.interval_sec`: 60 s.
pub(super) const DEFAULT_RUN_RETRY_INTERVAL_MS: u64 = 60_000;

/// Dagu's default `retry_policy.max_interval_sec`: an hour.
pub(super) const DEFAULT_RUN_RETRY_MAX_INTERVAL_MS: u64 = 3_600_000;

/// The DAG-level `retryPolicy` (Dagu's `dagRetryPolicy`): `limit` (required, ≥ 0),
/// `intervalSec` (> 0, default 60), `backoff`, `maxIntervalSec` (> 0, default 3600); whole
/// seconds, numeric strings taken as in Dagu.
const DAG_POLICY: PolicyForm = PolicyForm {
    table: &DAG_RETRY_POLICY,
    expected: "a map with limit: (and optionally interval_sec:, backoff:, max_interval_sec:)",
    defaults: RetryPolicy {
        limit: 0,
        interval_ms: DEFAULT_RUN_RETRY_INTERVAL_MS,
        backoff_milli: 1000,
        max_interval_ms: Some(DEFAULT_RUN_RETRY_MAX_INTERVAL_MS),
        exit_codes: Vec::new(),
    },
    missing_limit:
        "missing; give limit: (the most automatic retries of a failed run, for example 2)",
    interval: |field, value, report| {
        const FIX: &str = "give the wait before the run is retried in whole seconds (for \
                           example 60, the default)";
        positive_seconds(field, value, FIX, report)
    },
    max_interval: |field, value, report| {
        const FIX: &str = "give the longest wait between retries of the run in whole seconds \
                           (for example 3600, the default)";
        positive_seconds(field, value, FIX, report)
    },
};

/// The DAG-level `retryPolicy`; see [`DAG_POLICY`].
pub(super) fn retry_policy(field: &str, value: &Value, report: &mut Report) -> Option<RetryPolicy> {
    reliability::policy(&DAG_POLICY, field, value, report)
}

/// Whole seconds greater than 0 (a numeric string too), in ms.
fn positive_seconds(field: &str, value: &Value, fix: &str, report: &mut Report) -> Option<u64> {
    let written = reliability::number(
        field,
        value,
        "a whole number of seconds",
        Strings::Numeric,
        report,
    )?;
    let ms = reliability::millis(field, &written, Fraction::Refused, fix, report)?;
    if ms == 0 {
        report.error(
            field,
            format!("0 is not allowed (Dagu requires more than 0); {fix}"),
        );
        return None;
    }
    Some(ms)
}

/// `delaySec` and `restartWaitSec`: whole seconds ≥ 0, in ms; 0 means none (`None`).
pub(super) fn seconds(field: &str, value: &Value, fix: &str, report: &mut Report) -> Option<u64> {
    let ms = reliability::whole_seconds(field, value, fix, report)?;
    (ms > 0).then_some(ms)
}

/// `skipIfSuccessful: true | false`.
pub(super) fn flag(field: &str, value: &Value, report: &mut Report) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        other => {
            type_error(report, field, "true or false", other);
            false
        }
    }
}

/// `schedule:` as a cron string, a list of entries, or Dagu's map of `start:`, `stop:` and
/// `restart:` lists. An entry is a cron expression, `{expression: <cron>}` or (in a start list
/// only) a one-off `{at: <RFC 3339 time>}`. Returns the start expressions; the stop and
/// restart expressions and the one-off times go to `policy`.
pub(super) fn schedule(
    field: &str,
    value: &Value,
    policy: &mut RunPolicy,
    report: &mut Report,
) -> Vec<String> {
    let Value::Mapping(map) = value else {
        return entries(field, value, Some(&mut policy.at_ms), report);
    };
    let mut start = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            Some("start") => {
                start = entries(
                    &child(field, "start"),
                    value,
                    Some(&mut policy.at_ms),
                    report,
                );
            }
            Some("stop") => policy.stop = entries(&child(field, "stop"), value, None, report),
            Some("restart") => {
                policy.restart = entries(&child(field, "restart"), value, None, report);
            }
            Some(other) => report.error(
                child(field, other),
                format!(
                    "unknown key \"{other}\"; a schedule map takes start:, stop: and restart: \
                     (each a cron expression or a list of them)"
                ),
            ),
            None => report.error(field, "keys must be strings (start, stop, restart)"),
        }
    }
    policy.at_ms.sort_unstable();
    policy.at_ms.dedup();
    start
}

/// One list of schedule entries; one-off entries go to `at` (`None`: not allowed here).
fn entries(
    field: &str,
    value: &Value,
    mut at: Option<&mut Vec<u64>>,
    report: &mut Report,
) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(text) if text.trim().is_empty() => Vec::new(),
        Value::String(text) => vec![text.clone()],
        Value::Mapping(map) => entry_map(field, map, at, report).into_iter().collect(),
        Value::Sequence(items) => {
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                let field = item(field, i);
                match v {
                    Value::String(text) => out.push(text.clone()),
                    Value::Mapping(map) => {
                        out.extend(entry_map(&field, map, at.as_deref_mut(), report));
                    }
                    other => type_error(
                        report,
                        &field,
                        "a cron expression string or {expression: …} / {at: …}",
                        other,
                    ),
                }
            }
            out
        }
        other => {
            type_error(
                report,
                field,
                "a cron expression, a list of them, or {at: <RFC 3339 time>}",
                other,
            );
            Vec::new()
        }
    }
}

/// A typed entry (`kind`, `expression`, `at`): the cron expression, or `None` for a one-off
/// (pushed to `at`) or a problem (reported).
fn entry_map(
    field: &str,
    map: &Mapping,
    at: Option<&mut Vec<u64>>,
    report: &mut Report,
) -> Option<String> {
    let mut kind_of = None;
    let mut expression = None;
    let mut when = None;
    for (key, value) in map {
        let name = key.as_str().unwrap_or("");
        let text = match value {
            Value::String(text) => text.clone(),
            other => {
                report.error(
                    child(field, name),
                    format!("expected a string, found {}", kind(other)),
                );
                return None;
            }
        };
        match name {
            "kind" => kind_of = Some(text.trim().to_string()),
            "expression" => expression = Some(text),
            "at" => when = Some(text),
            other => {
                report.error(
                    child(field, other),
                    format!(
                        "unknown key \"{other}\"; a schedule entry takes expression: (a cron \
                         expression) or at: (an RFC 3339 time such as 2026-03-01T09:00:00+09:00)"
                    ),
                );
                return None;
            }
        }
    }
    let one_off = match (kind_of.as_deref(), &expression, &when) {
        (_, Some(_), Some(_)) => {
            report.error(field, "give expression: or at:, not both");
            return None;
        }
        (Some("cron") | None, Some(_), None) => false,
        (Some("at") | None, None, Some(_)) => true,
        (Some("cron"), None, _) => {
            report.error(field, "a cron entry needs expression: (a cron expression)");
            return None;
        }
        (Some("at"), _, None) => {
            report.error(field, "a one-off entry needs at: (an RFC 3339 time)");
            return None;
        }
        (Some(other), _, _) => {
            report.error(
                child(field, "kind"),
                format!("\"{other}\" is not a schedule kind; use cron or at"),
            );
            return None;
        }
        (None, None, None) => {
            report.error(field, "a schedule entry needs expression: or at:");
            return None;
        }
    };
    if !one_off {
        return expression;
    }
    let text = when.unwrap_or_default();
    let Some(at) = at else {
        report.error(
            child(field, "at"),
            "one-off entries are only for starting the DAG; put them under schedule.start (or \
             in the schedule list)",
        );
        return None;
    };
    match chrono::DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) if t.timestamp_millis() >= 0 => at.push(t.timestamp_millis() as u64),
        _ => report.error(
            child(field, "at"),
            format!(
                "\"{text}\" is not an RFC 3339 time with an offset; write it as \
                 2026-03-01T09:00:00+09:00 (or …Z for UTC)"
            ),
        ),
    }
    None
}
