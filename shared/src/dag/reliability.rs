//! Retries, timeouts and stopping: a step's `retryPolicy`, `timeoutSec` and `signalOnStop`, and
//! the DAG's `timeoutSec` and `maxCleanUpTimeSec`.
//!
//! The file gives durations in seconds (Dagu's unit); [`super::Dag`] and [`super::Step`] keep
//! milliseconds. Only `retryPolicy.limit` and `retryPolicy.intervalSec` also take a string
//! holding a number, because Dagu substitutes `${VAR}` there at run time; dagrid needs the
//! number when the DAG is submitted, so a string with `$` or a backtick is refused.

use serde_yaml::Value;

use super::names::suggest;
use super::report::{child, item, Report};
use super::value::{kind, type_error};
use super::yaml_keys::{KeyTable, RetryKey, RETRY_POLICY};
use super::RetryPolicy;

/// The longest duration any of these keys takes: `u32::MAX` seconds (about 136 years), so a
/// deadline `now + duration` in ms stays far from `u64::MAX`.
const MAX_SECONDS: u64 = u32::MAX as u64;

/// The largest `backoff` factor: beyond it the second wait is already over a thousand times the
/// first, and `backoff_milli` must fit a `u32`.
const MAX_BACKOFF: f64 = 1000.0;

/// `backoff_milli` of no growth (`backoff` absent, `false` or `0`).
const NO_BACKOFF_MILLI: u32 = 1000;

/// `backoff_milli` of `backoff: true` (Dagu: a factor of 2).
const TRUE_BACKOFF_MILLI: u32 = 2000;

/// The signals a step may be stopped with, without `SIG`, in the order messages list them:
/// the ones sent to ask a process to end (their default action ends it). Job-control signals
/// (`SIGSTOP`, `SIGTSTP`, …) only pause a process and fault signals (`SIGSEGV`, …) report a
/// crash, so neither is accepted.
const STOP_SIGNALS: &[&str] = &[
    "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "ALRM", "ABRT", "KILL",
];

/// Other POSIX and Linux signal names, without `SIG`: known, but not for stopping a step.
const OTHER_SIGNALS: &[&str] = &[
    "STOP", "TSTP", "CONT", "TTIN", "TTOU", "CHLD", "CLD", "WINCH", "URG", "PIPE", "SEGV", "BUS",
    "FPE", "ILL", "TRAP", "SYS", "IOT", "XCPU", "XFSZ", "VTALRM", "PROF", "IO", "POLL", "PWR",
    "STKFLT",
];

/// Linux numbers of the accepted signals, for the hint when a number is written.
const LINUX_SIGNAL_NUMBERS: &[(i64, &str)] = &[
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (6, "ABRT"),
    (9, "KILL"),
    (10, "USR1"),
    (12, "USR2"),
    (14, "ALRM"),
    (15, "TERM"),
];

/// A number as written: its value and its text for messages.
pub(super) struct Written {
    pub(super) value: f64,
    pub(super) text: String,
}

/// Whether a number field also takes a string holding a number.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Strings {
    /// A YAML number only.
    Refused,
    /// A YAML number or a string holding one (fields where Dagu substitutes `${VAR}`).
    Numeric,
}

/// Whether a duration may have a fractional part.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fraction {
    /// Whole seconds only (Dagu reads these as integers).
    Refused,
    /// Fractions are kept to the millisecond.
    Allowed,
}

/// The number at `field`: `None` for null (absent) or a problem (reported).
pub(super) fn number(
    field: &str,
    value: &Value,
    expected: &str,
    strings: Strings,
    report: &mut Report,
) -> Option<Written> {
    match value {
        Value::Null => None,
        Value::Number(number) => {
            let value = number.as_f64()?;
            let text = number.to_string();
            Some(Written { value, text })
        }
        Value::String(text) if strings == Strings::Numeric => number_in_string(field, text, report),
        Value::String(text) if text.trim().parse::<f64>().is_ok() => {
            let message =
                format!("expected {expected}, found the string \"{text}\"; remove the quotes");
            report.error(field, message);
            None
        }
        other => {
            type_error(report, field, expected, other);
            None
        }
    }
}

/// A number written as a string (`limit: "3"`), as Dagu allows where it substitutes variables.
fn number_in_string(field: &str, text: &str, report: &mut Report) -> Option<Written> {
    let trimmed = text.trim();
    if trimmed.contains('$') || trimmed.contains('`') {
        report.error(
            field,
            format!(
                "\"{text}\" is substituted at run time in Dagu, but dagrid needs a literal number \
                 when the DAG is submitted; write the number itself (for example 3)"
            ),
        );
        return None;
    }
    match trimmed.parse::<f64>() {
        Ok(value) if !trimmed.is_empty() => Some(Written {
            value,
            text: format!("\"{text}\""),
        }),
        _ => {
            report.error(
                field,
                format!("\"{text}\" is not a number; write a number (for example 3)"),
            );
            None
        }
    }
}

/// `written` seconds as milliseconds: finite, not negative, at most [`MAX_SECONDS`], whole
/// unless `fraction` allows otherwise (then rounded to the millisecond). `fix` says what to
/// write instead.
pub(super) fn millis(
    field: &str,
    written: &Written,
    fraction: Fraction,
    fix: &str,
    report: &mut Report,
) -> Option<u64> {
    let Written { value, text } = written;
    let problem = if !value.is_finite() {
        "is not a finite number"
    } else if *value < 0.0 {
        "is negative"
    } else if fraction == Fraction::Refused && value.fract() != 0.0 {
        "is not a whole number of seconds"
    } else if *value > MAX_SECONDS as f64 {
        "is too many seconds (at most 4294967295, about 136 years)"
    } else {
        return Some((value * 1000.0).round() as u64);
    };
    report.error(field, format!("{text} {problem}; {fix}"));
    None
}

/// A step's or the DAG's `timeoutSec`: whole seconds, in ms; 0 means no timeout (`None`), as in
/// Dagu.
pub(super) fn timeout(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    const FIX: &str = "give the timeout in whole seconds (for example 600), or 0 for none";
    let ms = whole_seconds(field, value, FIX, report)?;
    (ms > 0).then_some(ms)
}

/// Whole seconds ≥ 0 (a number, not a string), in ms; `fix` ends the message of a problem.
pub(super) fn whole_seconds(
    field: &str,
    value: &Value,
    fix: &str,
    report: &mut Report,
) -> Option<u64> {
    let written = number(
        field,
        value,
        "a whole number of seconds",
        Strings::Refused,
        report,
    )?;
    millis(field, &written, Fraction::Refused, fix, report)
}

/// The DAG's `maxCleanUpTimeSec`: whole seconds between a step's stop signal and SIGKILL, in ms;
/// 0 sends SIGKILL at once.
pub(super) fn cleanup(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    const FIX: &str =
        "give the grace in whole seconds (for example 5, the default; 0 kills at once)";
    whole_seconds(field, value, FIX, report)
}

/// A step's `signalOnStop`: a signal name with or without `SIG`, in any case, normalised to
/// `SIGTERM` style; only the signals in [`STOP_SIGNALS`].
pub(super) fn signal_on_stop(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(text) => text,
        Value::Number(number) => {
            report.error(field, number_message(&number.to_string(), number.as_i64()));
            return None;
        }
        other => {
            let found = kind(other);
            let message = format!("expected a signal name such as SIGTERM, found {found}");
            report.error(field, message);
            return None;
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        report.error(
            field,
            "is empty; name a signal such as SIGTERM, or remove the key (SIGTERM is the default)",
        );
        return None;
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        report.error(
            field,
            number_message(&format!("\"{text}\""), trimmed.parse().ok()),
        );
        return None;
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if STOP_SIGNALS.contains(&bare) {
        return Some(format!("SIG{bare}"));
    }
    let accepted = accepted_signals();
    let message = if OTHER_SIGNALS.contains(&bare) {
        format!("SIG{bare} is not a signal dagrid stops steps with; use one of {accepted}")
    } else {
        match suggest(bare, STOP_SIGNALS.iter().copied()) {
            Some(near) => format!("\"{text}\" is not a signal name; did you mean SIG{near}?"),
            None => format!("\"{text}\" is not a signal name; use one of {accepted}"),
        }
    };
    report.error(field, message);
    None
}

/// The message for a signal given as a number (`text` as written).
fn number_message(text: &str, number: Option<i64>) -> String {
    let named = LINUX_SIGNAL_NUMBERS
        .iter()
        .find(|(n, _)| Some(*n) == number)
        .map(|(_, name)| name);
    match named {
        Some(name) => format!(
            "{text} is a signal number; write the name instead, SIG{name} (numbers differ \
             between systems, names do not)"
        ),
        None => format!(
            "{text} is a signal number; write a signal name instead, one of {}",
            accepted_signals()
        ),
    }
}

fn accepted_signals() -> String {
    let names: Vec<String> = STOP_SIGNALS
        .iter()
        .map(|name| format!("SIG{name}"))
        .collect();
    names.join(", ")
}

/// What differs between the two `retryPolicy` maps: a step's (retry the step) and the DAG's
/// (Dagu's `dagRetryPolicy`: retry a failed run). Both share `limit` and `backoff`.
pub(super) struct PolicyForm {
    /// The keys the map takes.
    pub(super) table: &'static KeyTable<RetryKey>,
    /// What a value that is not a map should have been.
    pub(super) expected: &'static str,
    /// The policy before its keys are read (the defaults).
    pub(super) defaults: RetryPolicy,
    /// The message for a missing `limit`.
    pub(super) missing_limit: &'static str,
    /// Reads `intervalSec` (ms; `None` after a problem, or to keep the default).
    pub(super) interval: fn(&str, &Value, &mut Report) -> Option<u64>,
    /// Reads `maxIntervalSec` (ms; `None` for no value of its own: the default stays).
    pub(super) max_interval: fn(&str, &Value, &mut Report) -> Option<u64>,
}

/// A step's `retryPolicy`: `limit` (required), `intervalSec` (≥ 0, fractions allowed, default
/// 0), `backoff`, `maxIntervalSec` (0 or absent: no cap), `exitCode`.
pub(super) const STEP_POLICY: PolicyForm = PolicyForm {
    table: &RETRY_POLICY,
    expected: "a map with limit: (and optionally intervalSec:, backoff:, maxIntervalSec:, \
               exitCode:)",
    defaults: RetryPolicy {
        limit: 0,
        interval_ms: 0,
        backoff_milli: NO_BACKOFF_MILLI,
        max_interval_ms: None,
        exit_codes: Vec::new(),
    },
    missing_limit: "missing; give limit: (the most retries after the first attempt, for example 3)",
    interval,
    max_interval,
};

/// A step's `retryPolicy` map; see [`RetryPolicy`] and [`STEP_POLICY`]. `None` for null
/// (absent) or a problem (reported).
pub(super) fn retry_policy(field: &str, value: &Value, report: &mut Report) -> Option<RetryPolicy> {
    policy(&STEP_POLICY, field, value, report)
}

/// A `retryPolicy` map of either `form`. `None` for null (absent) or a problem (reported).
pub(super) fn policy(
    form: &PolicyForm,
    field: &str,
    value: &Value,
    report: &mut Report,
) -> Option<RetryPolicy> {
    let map = match value {
        Value::Null => return None,
        Value::Mapping(map) => map,
        other => {
            type_error(report, field, form.expected, other);
            return None;
        }
    };
    let mut limit = None;
    let mut limit_given = false;
    let mut policy = form.defaults.clone();
    for entry in form.table.entries(map, field, report) {
        let (field, value) = (entry.field.as_str(), entry.value);
        match entry.key {
            RetryKey::Limit => {
                limit_given |= !value.is_null();
                limit = retry_limit(field, value, report);
            }
            RetryKey::IntervalSec => {
                if let Some(ms) = (form.interval)(field, value, report) {
                    policy.interval_ms = ms;
                }
            }
            RetryKey::Backoff => {
                policy.backoff_milli = backoff(field, value, report).unwrap_or(NO_BACKOFF_MILLI);
            }
            RetryKey::MaxIntervalSec => {
                if let Some(ms) = (form.max_interval)(field, value, report) {
                    policy.max_interval_ms = Some(ms);
                }
            }
            // Only in the step's table; the DAG's reports it as an unknown key.
            RetryKey::ExitCode => policy.exit_codes = exit_codes(field, value, report),
        }
    }
    if !limit_given {
        report.error(child(field, "limit"), form.missing_limit);
    }
    policy.limit = limit?;
    Some(policy)
}

/// `retryPolicy.limit`: a whole number ≥ 0 (a numeric string too, as in Dagu).
pub(super) fn retry_limit(field: &str, value: &Value, report: &mut Report) -> Option<u32> {
    const FIX: &str = "give the most retries as a whole number (for example 3; 0 never retries)";
    let Written { value, text } = number(
        field,
        value,
        "a whole number of retries",
        Strings::Numeric,
        report,
    )?;
    let problem = if !value.is_finite() || value.fract() != 0.0 {
        "is not a whole number"
    } else if value < 0.0 {
        "is negative"
    } else if value > u32::MAX as f64 {
        "is too large (at most 4294967295)"
    } else {
        return Some(value as u32);
    };
    report.error(field, format!("{text} {problem}; {FIX}"));
    None
}

/// `retryPolicy.intervalSec`: seconds ≥ 0, fractions allowed (a numeric string too, as in
/// Dagu), in ms.
fn interval(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    const FIX: &str = "give the wait before a retry in seconds (for example 30; default 0)";
    let written = number(
        field,
        value,
        "a number of seconds",
        Strings::Numeric,
        report,
    )?;
    millis(field, &written, Fraction::Allowed, FIX, report)
}

/// `retryPolicy.maxIntervalSec`: seconds > 0, in ms; 0 means no cap (`None`), as in Dagu.
pub(super) fn max_interval(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    const FIX: &str =
        "give the longest wait between retries in seconds (for example 300), or 0 for no cap";
    let written = number(
        field,
        value,
        "a number of seconds",
        Strings::Refused,
        report,
    )?;
    let ms = millis(field, &written, Fraction::Allowed, FIX, report)?;
    (ms > 0).then_some(ms)
}

/// `retryPolicy.backoff` in thousandths: `true` is 2.0, `false` and `0` are no growth (as in
/// Dagu), otherwise a factor greater than 1 and at most [`MAX_BACKOFF`].
pub(super) fn backoff(field: &str, value: &Value, report: &mut Report) -> Option<u32> {
    const FIX: &str = "use true (the wait doubles each retry), false (a fixed wait) or a factor \
                       greater than 1 such as 1.5";
    let number = match value {
        Value::Null => return None,
        Value::Bool(true) => return Some(TRUE_BACKOFF_MILLI),
        Value::Bool(false) => return Some(NO_BACKOFF_MILLI),
        Value::Number(number) => number,
        other => {
            type_error(
                report,
                field,
                "true, false or a number greater than 1",
                other,
            );
            return None;
        }
    };
    let factor = number.as_f64()?;
    let milli = (factor * 1000.0).round();
    let problem = if factor == 0.0 {
        return Some(NO_BACKOFF_MILLI);
    } else if !factor.is_finite() || factor < 0.0 {
        "is not a growth factor"
    } else if factor <= 1.0 {
        "would not grow the wait (Dagu requires a factor greater than 1)"
    } else if factor > MAX_BACKOFF {
        "is too large (at most 1000)"
    } else if milli <= f64::from(NO_BACKOFF_MILLI) {
        "is too close to 1 (dagrid keeps three decimals, so at least 1.001)"
    } else {
        return Some(milli as u32);
    };
    report.error(field, format!("{number} {problem}; {FIX}"));
    None
}

/// `retryPolicy.exitCode`: an exit code or a list of them, each 0 to 255; duplicates dropped.
pub(super) fn exit_codes(field: &str, value: &Value, report: &mut Report) -> Vec<i32> {
    let mut codes = Vec::new();
    match value {
        Value::Null => {}
        Value::Sequence(items) => {
            for (index, code) in items.iter().enumerate() {
                codes.extend(exit_code(&item(field, index), code, "an exit code", report));
            }
        }
        other => codes.extend(exit_code(
            field,
            other,
            "an exit code or a list of them",
            report,
        )),
    }
    let mut seen = Vec::with_capacity(codes.len());
    codes.retain(|code| {
        let new = !seen.contains(code);
        seen.push(*code);
        new
    });
    codes
}

fn exit_code(field: &str, value: &Value, expected: &str, report: &mut Report) -> Option<i32> {
    let Value::Number(number) = value else {
        type_error(report, field, &format!("{expected} (0 to 255)"), value);
        return None;
    };
    match number.as_i64() {
        Some(code @ 0..=255) => Some(code as i32),
        _ => {
            report.error(
                field,
                format!(
                    "{number} is not an exit code; write whole numbers from 0 to 255 (a step \
                     killed by a signal has no exit code: only a policy without exitCode \
                     retries it)"
                ),
            );
            None
        }
    }
}
