//! Top-level keys of how runs of a DAG are queued and scheduled: `priority`, `queue`,
//! `maxActiveRuns`, `maxActiveSteps`, `dedup`, `schedule`, `timezone`, `catchupWindow` and
//! `overlapPolicy`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::names::dag_name_problem;
use super::report::{item, Report};
use super::value::{string, type_error};
use super::OverlapPolicy;
use crate::duration::{MAX_DURATION_MS, MAX_DURATION_TEXT};
use crate::schedule::{parse_timezone, CronSchedule};

/// `text` parsed with its `FromStr`, the error reported at `field`.
fn parsed<T: std::str::FromStr>(field: &str, text: &str, report: &mut Report) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    match text.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            report.error(field, e.to_string());
            None
        }
    }
}

/// `priority: high | normal | low | 0..9`.
pub(super) fn priority(field: &str, value: &Value, report: &mut Report) -> Option<Priority> {
    let text = match value {
        Value::Null => return None,
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            type_error(report, field, "high, normal, low or a number 0-9", other);
            return None;
        }
    };
    parsed(field, &text, report)
}

/// `queue: <name>`: the named queue whose `maxConcurrency` the DAG's runs share.
pub(super) fn queue(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let name = string(report, field, "a queue name string", value)?;
    if let Some(problem) = dag_name_problem(&name) {
        report.error(
            field,
            format!(
                "\"{name}\" is not a valid queue name: it {problem}; {}",
                super::NAME_RULE
            ),
        );
        return None;
    }
    Some(name)
}

/// The largest count limit (`maxActiveRuns`, `maxActiveSteps`) accepted.
const MAX_LIMIT: u32 = 1_000_000;

/// A count limit (`maxActiveRuns`, `maxActiveSteps`): a positive integer up to 1,000,000; 0 or
/// Dagu's `-1` means no limit (`None`); any other negative number is refused.
pub(super) fn limit(field: &str, value: &Value, report: &mut Report) -> Option<u32> {
    match value {
        Value::Null => None,
        Value::Number(n) => {
            match n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)) {
                Some(0 | -1) => None,
                Some(v) if v < 0 => {
                    report.error(
                        field,
                        format!("{v} is negative; use a positive integer, or 0 or -1 for no limit"),
                    );
                    None
                }
                Some(v) => match u32::try_from(v) {
                    Ok(v) if v <= MAX_LIMIT => Some(v),
                    _ => {
                        report.error(
                            field,
                            format!(
                                "{n} is too large; use at most {MAX_LIMIT}, or 0 or -1 for no \
                                 limit"
                            ),
                        );
                        None
                    }
                },
                None => {
                    report.error(
                    field,
                    format!("{n} is not a whole number; use a positive integer (or -1 for no limit)"),
                );
                    None
                }
            }
        }
        other => {
            type_error(report, field, "a positive integer", other);
            None
        }
    }
}

/// `dedup: active | none | window:<duration>` or `dedup: {window: <duration>}`.
pub(super) fn dedup(field: &str, value: &Value, report: &mut Report) -> Option<DedupPolicy> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Mapping(m) => {
            let window = m.get("window");
            match (m.len(), window) {
                (1, Some(Value::String(d))) => format!("window:{d}"),
                _ => {
                    report.error(
                        field,
                        "a dedup map takes one key, window: <duration> (for example \
                         window: 24h); or write active or none",
                    );
                    return None;
                }
            }
        }
        other => {
            type_error(report, field, "active, none or {window: <duration>}", other);
            return None;
        }
    };
    parsed(field, &text, report)
}

/// Reports every schedule expression that does not parse with the DAG's time zone.
pub(super) fn check_schedules(
    field: &str,
    schedules: &[String],
    timezone: Option<&str>,
    report: &mut Report,
) {
    for (i, text) in schedules.iter().enumerate() {
        if let Err(e) = CronSchedule::parse(text, timezone) {
            let at = if schedules.len() == 1 {
                field.to_string()
            } else {
                item(field, i)
            };
            report.error(at, e);
        }
    }
}

/// `timezone: <IANA zone>`: the zone of the DAG's schedules that carry no `CRON_TZ=`.
pub(super) fn timezone(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let name = string(report, field, "an IANA time zone name", value)?;
    match parse_timezone(&name) {
        Ok(_) => Some(name.trim().to_string()),
        Err(e) => {
            report.error(field, e);
            None
        }
    }
}

/// `catchupWindow: <duration>` (humantime, e.g. `6h`), in ms.
pub(super) fn catchup_window(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    let text = string(report, field, "a duration string such as 6h", value)?;
    match crate::duration::parse_duration_ms(&text) {
        Ok(ms) => Some(ms),
        Err(e) => {
            report.error(field, e);
            None
        }
    }
}

/// `overlapPolicy: skip | all | latest`.
pub(super) fn overlap(field: &str, value: &Value, report: &mut Report) -> Option<OverlapPolicy> {
    match string(report, field, "skip, all or latest", value)?.as_str() {
        "skip" => Some(OverlapPolicy::Skip),
        "all" => Some(OverlapPolicy::All),
        "latest" => Some(OverlapPolicy::Latest),
        other => {
            report.error(
                field,
                format!(
                    "\"{other}\" is not an overlap policy; use skip (the default), all or latest"
                ),
            );
            None
        }
    }
}

/// A run's priority: 0 to [`Priority::MAX`], higher runs first. Its steps go to the ready
/// stream of that level ([`crate::redis::keys::Keys::ready`]), and workers always take from the highest
/// non-empty level (strict priority, no aging: under a sustained backlog of higher levels,
/// lower levels wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// The highest level.
    pub const MAX: u8 = 9;
    /// `low`.
    pub const LOW: Priority = Priority(2);
    /// `normal`, the default.
    pub const NORMAL: Priority = Priority(5);
    /// `high`.
    pub const HIGH: Priority = Priority(8);

    /// The level `n`, or `None` above [`Priority::MAX`].
    pub fn new(n: u8) -> Option<Self> {
        (n <= Self::MAX).then_some(Self(n))
    }

    /// The level as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Every level, highest first.
    pub fn levels_high_to_low() -> impl Iterator<Item = Priority> {
        (0..=Self::MAX).rev().map(Priority)
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::NORMAL
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The error of parsing a priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{0}\" is not a priority; use high, normal, low or a number from 0 to 9 (higher runs first)"
)]
pub struct BadPriority(pub String);

impl FromStr for Priority {
    type Err = BadPriority;
    /// `high` (8), `normal` (5), `low` (2), or a number 0..=9.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Self::HIGH),
            "normal" => Ok(Self::NORMAL),
            "low" => Ok(Self::LOW),
            n => n
                .parse::<u8>()
                .ok()
                .and_then(Priority::new)
                .ok_or_else(|| BadPriority(s.to_string())),
        }
    }
}

/// What a run's dedup key prevents (the DAG's `dedup:`, overridable per submit). The key is the
/// DAG name plus the canonical bound params, or the caller's explicit dedup key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupPolicy {
    /// While a run with the same key is queued or running, a submit returns that run instead
    /// of creating one (the default).
    #[default]
    Active,
    /// As `active`, and also for this many ms after that run succeeded (so a rerun batch skips
    /// work already done). A failed run releases the key at once.
    Window(u64),
    /// No dedup.
    None,
}

impl fmt::Display for DedupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupPolicy::Active => f.write_str("active"),
            DedupPolicy::None => f.write_str("none"),
            DedupPolicy::Window(ms) => write!(
                f,
                "window:{}",
                humantime::format_duration(std::time::Duration::from_millis(*ms))
            ),
        }
    }
}

/// The error of parsing a dedup policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDedupPolicy {
    /// Not a policy at all.
    #[error(
        "\"{0}\" is not a dedup policy; use active, none or window:<duration> (for example window:24h)"
    )]
    Unknown(String),
    /// A window longer than [`MAX_DURATION_MS`].
    #[error("\"{0}\": the dedup window is at most {MAX_DURATION_TEXT}")]
    TooLong(String),
}

impl FromStr for DedupPolicy {
    type Err = BadDedupPolicy;
    /// `active`, `none`, or `window:<duration>` / `window <duration>` (humantime: `90s`, `24h`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t {
            "active" => return Ok(Self::Active),
            "none" => return Ok(Self::None),
            _ => {}
        }
        let window = t
            .strip_prefix("window")
            .map(|rest| rest.trim_start_matches([':', '=', ' ']).trim())
            .filter(|d| !d.is_empty())
            .and_then(|d| humantime::parse_duration(d).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| BadDedupPolicy::Unknown(s.to_string()))?;
        match u64::try_from(window.as_millis()) {
            Ok(ms) if ms <= MAX_DURATION_MS => Ok(Self::Window(ms)),
            _ => Err(BadDedupPolicy::TooLong(s.to_string())),
        }
    }
}

/// `workerSelector` / `worker_selector`: a map of labels a worker must have (scalar values read
/// as text, as Dagu reads them), or Dagu's `"local"` (run on the Dagu instance itself), which
/// dagrid, having no local executor, reads as no selector with a warning.
pub(super) fn worker_selector(
    field: &str,
    value: &Value,
    report: &mut Report,
) -> crate::labels::Labels {
    let mut labels = crate::labels::Labels::new();
    match value {
        Value::Null => {}
        Value::String(s) if s.trim().eq_ignore_ascii_case("local") => report.warn(format!(
            "{field}: \"local\" runs the DAG on the Dagu instance itself; dagrid has no local \
             executor, so any worker runs it"
        )),
        Value::Mapping(map) => {
            for (k, v) in map {
                let Some(key) = k.as_str() else {
                    report.error(field, "a selector key must be a string, e.g. gpu: true");
                    continue;
                };
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => {
                        report.error(
                            format!("{field}.{key}"),
                            "a selector value must be a string, number or boolean, e.g. gpu: true",
                        );
                        continue;
                    }
                };
                if let Err(e) = labels.insert(key, &text) {
                    report.error(format!("{field}.{key}"), e.to_string());
                }
            }
        }
        _ => report.error(
            field,
            "use a map of the labels a worker must have, e.g. workerSelector: {gpu: \"true\"}",
        ),
    }
    labels
}
