//! A step's `repeatPolicy` / `repeat_policy` (Dagu `internal/core/spec/step.go`,
//! `buildStepRepeatPolicy`, and `types/repeatmode.go`): run a step again and again, `while` or
//! `until` a condition or an exit code says so, with a wait between executions.
//!
//! As in Dagu: `repeat` is `true` (legacy: `while`), `false`, `"while"` or `"until"`; without
//! it the mode is inferred (`condition` and `expected` → `until`; `condition` or `exitCode` →
//! `while`; neither → no repeat). An explicit `while` / `until` needs `condition` or
//! `exitCode`. `limit` is the most executions (0: no limit); the wait after execution `n`
//! (from 1) is `intervalSec × backoff^n`, capped at `maxIntervalSec` ([`RepeatPolicy::delay_ms`]).
//! Like `retryPolicy`, dagrid needs the numbers when the DAG is submitted: a `${VAR}` in them
//! is refused. What the runtime does with the policy: `coordinator/src/plan.rs` and
//! docs/dag-format.md ("Repeat").

use serde_yaml::Value;

use super::conditions::read_expected;
use super::reliability::exit_codes;
use super::report::Report;
use super::value::{string, type_error};
use super::yaml_keys::{RepeatKey, REPEAT_POLICY};
use super::Condition;

/// The longest wait accepted, in seconds (about 136 years), as for `retryPolicy`.
const MAX_SECONDS: f64 = u32::MAX as f64;

/// Whether a step repeats while or until its check holds (Dagu `repeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepeatMode {
    /// Repeat while the check holds (`repeat: while`, or `repeat: true`).
    While,
    /// Repeat until the check holds (`repeat: until`).
    Until,
}

/// Dagu's step `repeatPolicy`. The check after each execution is, in this order: the
/// `condition` (with `expected`, a value check; without, a command check; as a precondition
/// is evaluated, on the worker), else the exit code being in `exit_codes`, else the execution
/// having succeeded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepeatPolicy {
    /// `while` or `until` the check holds.
    pub mode: RepeatMode,
    /// Dagu `condition` + `expected` (`negate` is always false here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Dagu `exitCode`: the check holds when the execution's exit code is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
    /// Wait after each execution (Dagu `intervalSec`, ms).
    #[serde(default)]
    pub interval_ms: u64,
    /// Most executions, the first included (Dagu `limit`); 0: no limit.
    #[serde(default)]
    pub limit: u32,
    /// Growth factor of the wait, in thousandths (Dagu `backoff`: `true` is 2.0); 0: a fixed
    /// wait.
    #[serde(default)]
    pub backoff_milli: u32,
    /// Upper bound of the wait (Dagu `maxIntervalSec`, ms); `None`: unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval_ms: Option<u64>,
}

impl RepeatPolicy {
    /// True when execution number `done` (from 1) may be followed by another: `limit` is 0 or
    /// not reached (Dagu checks the limit before the condition).
    pub fn allows_after(&self, done: u32) -> bool {
        self.limit == 0 || done < self.limit
    }

    /// Whether the check says to repeat, given whether the `condition` held (`None` when the
    /// policy has none), and the execution's exit code and success (Dagu `shouldRepeatNode`).
    pub fn wants(&self, condition_held: Option<bool>, exit_code: Option<i32>, ok: bool) -> bool {
        let held = match condition_held {
            Some(held) => held,
            None if !self.exit_codes.is_empty() => {
                exit_code.is_some_and(|c| self.exit_codes.contains(&c))
            }
            None => ok,
        };
        match self.mode {
            RepeatMode::While => held,
            RepeatMode::Until => !held,
        }
    }

    /// The wait after execution number `done` (from 1), in ms: `interval × backoff^done`
    /// capped at `max_interval_ms` (Dagu `CalculateBackoffInterval` with the done count), or
    /// the interval itself without backoff; at most [`crate::duration::MAX_DURATION_MS`].
    pub fn delay_ms(&self, done: u32) -> u64 {
        let raw = if self.backoff_milli > 0 {
            let factor = self.backoff_milli as f64 / 1000.0;
            let grown = self.interval_ms as f64 * factor.powi(done.min(64) as i32);
            match self.max_interval_ms {
                Some(max) => grown.min(max as f64),
                None => grown,
            }
        } else {
            self.interval_ms as f64
        };
        let raw = if raw.is_finite() {
            raw
        } else {
            u64::MAX as f64
        };
        (raw.min(u64::MAX as f64) as u64).min(crate::duration::MAX_DURATION_MS)
    }
}

/// A step's `repeatPolicy` map. `None` for null (absent), a policy that repeats nothing (no
/// mode given or inferred, as in Dagu), or a problem (reported).
pub(super) fn repeat_policy(
    field: &str,
    value: &Value,
    report: &mut Report,
) -> Option<RepeatPolicy> {
    let map = match value {
        Value::Null => return None,
        Value::Mapping(map) => map,
        other => {
            type_error(
                report,
                field,
                "a map with repeat: (while or until) and condition: or exitCode: (and \
                 optionally intervalSec:, limit:, backoff:, maxIntervalSec:)",
                other,
            );
            return None;
        }
    };
    let mut ok = true;
    // `Some((mode, written as a bool))` when `repeat` is set.
    let mut repeat: Option<(RepeatMode, bool)> = None;
    let mut condition = None;
    let mut expected = None;
    let mut policy = RepeatPolicy {
        mode: RepeatMode::While,
        condition: None,
        exit_codes: Vec::new(),
        interval_ms: 0,
        limit: 0,
        backoff_milli: 0,
        max_interval_ms: None,
    };
    for entry in REPEAT_POLICY.entries(map, field, report) {
        let (field, value) = (entry.field.as_str(), entry.value);
        match entry.key {
            RepeatKey::Repeat => match value {
                Value::Null | Value::Bool(false) => {}
                Value::Bool(true) => repeat = Some((RepeatMode::While, true)),
                Value::String(s) if s == "while" => repeat = Some((RepeatMode::While, false)),
                Value::String(s) if s == "until" => repeat = Some((RepeatMode::Until, false)),
                other => {
                    let found = match other {
                        Value::String(s) => format!("\"{s}\""),
                        other => super::value::kind(other).to_string(),
                    };
                    report.error(
                        field,
                        format!("invalid value {found}; it must be while, until, or a boolean"),
                    );
                    ok = false;
                }
            },
            RepeatKey::Condition => {
                condition = string(report, field, "a condition string", value);
                ok &= condition.is_some() || value.is_null();
                if condition.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    report.error(field, "is empty; give a command or a text with ${VAR}");
                    ok = false;
                }
            }
            RepeatKey::Expected => expected = read_expected(field, value, report, &mut ok),
            RepeatKey::ExitCode => policy.exit_codes = exit_codes(field, value, report),
            RepeatKey::IntervalSec => {
                policy.interval_ms = seconds(field, value, "the wait between executions", report)
                    .unwrap_or_else(|| {
                        ok &= value.is_null();
                        0
                    });
            }
            RepeatKey::MaxIntervalSec => {
                let ms = seconds(field, value, "the longest wait (0: no cap)", report);
                ok &= ms.is_some() || value.is_null();
                policy.max_interval_ms = ms.filter(|&ms| ms > 0);
            }
            RepeatKey::Limit => match limit(field, value, report) {
                Some(n) => policy.limit = n,
                None => ok &= value.is_null(),
            },
            RepeatKey::Backoff => match backoff(field, value, report) {
                Some(milli) => policy.backoff_milli = milli,
                None => ok &= value.is_null(),
            },
        }
    }
    if expected.is_some() && condition.is_none() {
        report.error(
            format!("{field}.expected"),
            "needs condition: (the text compared with expected); add it or remove expected",
        );
        return None;
    }
    let has_check = condition.is_some() || !policy.exit_codes.is_empty();
    policy.mode = match repeat {
        Some((mode, written_as_bool)) => {
            if !written_as_bool && !has_check {
                let mode = if mode == RepeatMode::While {
                    "while"
                } else {
                    "until"
                };
                report.error(
                    format!("{field}.repeat"),
                    format!(
                        "repeat mode '{mode}' requires either 'condition' or 'exit_code' to be \
                         specified; add one, or write repeat: true to repeat while the step \
                         succeeds"
                    ),
                );
                return None;
            }
            mode
        }
        // Dagu infers the mode of a policy written without `repeat`.
        None if condition.is_some() && expected.is_some() => RepeatMode::Until,
        None if has_check => RepeatMode::While,
        None => return None,
    };
    policy.condition = condition.map(|condition| Condition {
        condition,
        expected,
        negate: false,
    });
    ok.then_some(policy)
}

/// A number, or a string holding one (Dagu reads these fields as int-or-variable; a `$` or a
/// backtick is refused: dagrid needs the number at submit).
fn number(field: &str, value: &Value, expected: &str, report: &mut Report) -> Option<f64> {
    match value {
        Value::Null => None,
        Value::Number(n) => n.as_f64(),
        Value::String(text) if text.contains('$') || text.contains('`') => {
            report.error(
                field,
                format!(
                    "\"{text}\" is substituted at run time in Dagu, but dagrid needs a literal \
                     number when the DAG is submitted; write the number itself"
                ),
            );
            None
        }
        Value::String(text) => match text.trim().parse::<f64>() {
            Ok(n) if !text.trim().is_empty() => Some(n),
            _ => {
                report.error(
                    field,
                    format!("\"{text}\" is not a number; write {expected}"),
                );
                None
            }
        },
        other => {
            type_error(report, field, expected, other);
            None
        }
    }
}

/// Seconds ≥ 0 (fractions kept to the ms), in ms.
fn seconds(field: &str, value: &Value, what: &str, report: &mut Report) -> Option<u64> {
    let n = number(field, value, "a number of seconds", report)?;
    if !n.is_finite() || !(0.0..=MAX_SECONDS).contains(&n) {
        report.error(
            field,
            format!("{n} is not a number of seconds from 0 to 4294967295; give {what} in seconds"),
        );
        return None;
    }
    Some((n * 1000.0).round() as u64)
}

/// `limit`: a whole number of executions ≥ 0.
fn limit(field: &str, value: &Value, report: &mut Report) -> Option<u32> {
    let n = number(field, value, "a whole number of executions", report)?;
    if !n.is_finite() || n.fract() != 0.0 || n < 0.0 || n > u32::MAX as f64 {
        report.error(
            field,
            format!(
                "{n} is not a whole number of executions; give the most executions, the first \
                 included (for example 5; 0 for no limit)"
            ),
        );
        return None;
    }
    Some(n as u32)
}

/// `backoff` in thousandths, read as a step's `retryPolicy.backoff` is
/// ([`super::reliability::backoff`]: `true` 2.0, `false` or 0 no growth, else a factor greater
/// than 1 and at most 1000); no growth is stored as 0 here.
fn backoff(field: &str, value: &Value, report: &mut Report) -> Option<u32> {
    super::reliability::backoff(field, value, report)
        .map(|milli| if milli <= 1000 { 0 } else { milli })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<RepeatPolicy>, Vec<String>) {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let mut report = Report::default();
        let policy = repeat_policy("steps[0].repeatPolicy", &value, &mut report);
        let errors = match report.finish() {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        (policy, errors)
    }

    #[test]
    fn modes_are_read_and_inferred_as_dagu_does() {
        let (p, e) = parse("{repeat: until, condition: 'cat f', expected: '3', intervalSec: 2}");
        assert!(e.is_empty(), "{e:?}");
        let p = p.unwrap();
        assert_eq!(p.mode, RepeatMode::Until);
        assert_eq!(p.interval_ms, 2000);
        assert_eq!(p.condition.unwrap().expected.as_deref(), Some("3"));

        let (p, _) = parse("{repeat: true, limit: 3}");
        let p = p.unwrap();
        assert_eq!((p.mode, p.limit), (RepeatMode::While, 3));

        // Inferred: condition + expected → until; exit code alone → while.
        let (p, _) = parse("{condition: 'echo x', expected: 'x'}");
        assert_eq!(p.unwrap().mode, RepeatMode::Until);
        let (p, _) = parse("{exit_code: [1, 2], interval_sec: 0.5}");
        let p = p.unwrap();
        assert_eq!(
            (p.mode, p.exit_codes.clone(), p.interval_ms),
            (RepeatMode::While, vec![1, 2], 500)
        );

        // Nothing to repeat on, and `repeat: false`: no policy, no error.
        assert_eq!(parse("{intervalSec: 5}"), (None, vec![]));
        assert_eq!(parse("{repeat: false}"), (None, vec![]));
    }

    #[test]
    fn refusals_name_the_field_and_the_fix() {
        let cases = [
            ("{repeat: while}", "steps[0].repeatPolicy.repeat: repeat mode 'while' requires either 'condition' or 'exit_code'"),
            ("{repeat: sometimes, exitCode: [1]}", "steps[0].repeatPolicy.repeat: invalid value \"sometimes\"; it must be while, until, or a boolean"),
            ("{repeat: true, backoff: 1}", "steps[0].repeatPolicy.backoff: 1 would not grow the wait"),
            ("{repeat: true, limit: -1}", "steps[0].repeatPolicy.limit: -1 is not a whole number of executions"),
            ("{repeat: true, limit: '${N}'}", "is substituted at run time in Dagu"),
            ("{repeat: true, intervalSec: -2}", "steps[0].repeatPolicy.intervalSec: -2 is not a number of seconds"),
            ("{repeat: until, expected: x, exitCode: 0}", "steps[0].repeatPolicy.expected: needs condition:"),
            ("{repeat: true, every: 3}", "unknown key \"every\""),
            ("[while]", "steps[0].repeatPolicy: expected a map with repeat:"),
        ];
        for (yaml, want) in cases {
            let (p, e) = parse(yaml);
            assert!(p.is_none() || yaml.contains("every"), "{yaml}");
            assert!(e.iter().any(|e| e.contains(want)), "{yaml}: {e:?}");
        }
    }

    #[test]
    fn the_check_and_the_wait_follow_dagu() {
        let (p, _) = parse("{repeat: while, exitCode: [1]}");
        let p = p.unwrap();
        assert!(p.wants(None, Some(1), false));
        assert!(!p.wants(None, Some(0), true));
        assert!(!p.wants(None, None, false), "killed: no exit code");
        let (p, _) = parse("{repeat: until, exitCode: [0]}");
        assert!(p.unwrap().wants(None, Some(3), false));
        let (p, _) = parse("{repeat: true}");
        let p = p.unwrap();
        assert!(p.wants(None, Some(0), true) && !p.wants(None, Some(1), false));
        let (p, _) = parse("{repeat: until, condition: 'test -f x'}");
        let p = p.unwrap();
        assert!(p.wants(Some(false), Some(0), true) && !p.wants(Some(true), Some(0), true));

        let (p, _) =
            parse("{repeat: true, limit: 3, intervalSec: 1, backoff: 2, maxIntervalSec: 5}");
        let p = p.unwrap();
        assert!(p.allows_after(2) && !p.allows_after(3));
        assert_eq!(
            (p.delay_ms(1), p.delay_ms(2), p.delay_ms(3)),
            (2000, 4000, 5000)
        );
        let (p, _) = parse("{repeat: true, intervalSec: 3}");
        let p = p.unwrap();
        assert!(p.allows_after(1000));
        assert_eq!(p.delay_ms(7), 3000);
    }

    #[test]
    fn dags_read_both_spellings_and_max_output_size() {
        use crate::dag::Dag;
        let v1 = "maxOutputSize: 100\nsteps:\n  - name: a\n    command: x\n    repeatPolicy: {repeat: while, exitCode: [3], intervalSec: 2}\n";
        let v2 = "max_output_size: 100\nsteps:\n  - name: a\n    command: x\n    repeat_policy: {repeat: while, exit_code: [3], interval_sec: 2}\n";
        let (a, b) = (Dag::parse(v1, "d").unwrap(), Dag::parse(v2, "d").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.max_output_size, Some(100));
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        let p = a.steps[0].repeat.as_ref().unwrap();
        assert_eq!((p.mode, p.interval_ms), (RepeatMode::While, 2000));
        assert_eq!(
            Dag::parse("max_output_size: 0\nsteps: [{name: a, command: x}]\n", "d")
                .unwrap()
                .max_output_size,
            None,
            "0 is Dagu's default"
        );
        for (bad, want) in [
            ("-1", "max_output_size: -1 is not a size dagrid takes"),
            ("99999999999", "from 1 to 16777216"),
            (
                "'1MB'",
                "max_output_size: expected a whole number of bytes, found a string",
            ),
        ] {
            let yaml = format!("max_output_size: {bad}\nsteps: [{{name: a, command: x}}]\n");
            let e = Dag::parse(&yaml, "d").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    /// The encoding (and so the digest) of a DAG that uses neither key is unchanged.
    #[test]
    fn dags_without_them_encode_as_before() {
        let dag = crate::dag::Dag::parse("steps: [{name: a, command: x}]\n", "d").unwrap();
        let bytes = rmp_serde::to_vec_named(&dag).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("repeat") && !text.contains("max_output_size"));
    }
}
