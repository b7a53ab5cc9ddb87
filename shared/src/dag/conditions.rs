//! Dagu's `preconditions` (DAG and step level) and a step's `continueOn`: the file forms, the
//! parsed [`Condition`] and [`ContinueOn`], and the text matching both use ([`expected_matches`],
//! [`output_matches`]), shared by the parser (which checks `re:` patterns) and the worker (which
//! evaluates conditions and `continueOn.output`).
//!
//! Accepted forms of `preconditions` (`precondition` is the v1 spelling): a string (one command
//! check), one condition map, or a list whose items are strings or condition maps
//! `{condition, expected, negate}` (`command` is Dagu's old alias of `condition`). `expected` takes a string, or a number or boolean as its
//! text (older Dagu read it weakly typed). A `re:` pattern must compile.

use serde_yaml::Value;

use super::reliability::exit_codes;
use super::report::{item, Report};
use super::value::{kind, scalar_text, string, type_error};
use super::yaml_keys::{ConditionKey, ContinueKey, CONDITION, CONTINUE_ON};

/// One precondition (an entry of Dagu `preconditions`): with `expected`, a value check; without,
/// a command check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    /// Without [`Condition::expected`]: a command run by the step's shell, which holds when it
    /// exits 0. With it: a text in which `$VAR`, `${VAR}`, `$1`… and backtick commands are
    /// expanded on the worker, then compared with `expected`.
    pub condition: String,
    /// The text the expanded condition must equal (the whole text or one of its lines), or
    /// `re:<pattern>`, a regular expression that must match it (or one of its lines; not
    /// anchored). `None`: a command check.
    #[serde(default)]
    pub expected: Option<String>,
    /// Inverts the result (Dagu `negate`): the condition holds when the check does not.
    #[serde(default)]
    pub negate: bool,
}

/// A step's `continueOn` (Dagu): when a failed or skipped step lets its dependants run anyway.
/// The file gives a map, or Dagu's short form `failed` (= `failure: true`) or `skipped`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContinueOn {
    /// Dependants run when the step failed (its retries used up) (Dagu `failure`).
    #[serde(default)]
    pub failure: bool,
    /// Dependants run when the step was skipped (Dagu `skipped`).
    #[serde(default)]
    pub skipped: bool,
    /// Dependants run when the step failed with one of these exit codes (Dagu `exitCode`).
    #[serde(default)]
    pub exit_codes: Vec<i32>,
    /// Dependants run when the failed step's output (stdout and stderr, as its log holds them)
    /// has a line containing one of these texts, or matching one `re:<pattern>` (Dagu `output`).
    #[serde(default)]
    pub output: Vec<String>,
    /// A failure covered by the fields above counts as a success (Dagu `markSuccess`): the step
    /// ends `succeeded` and does not fail the run.
    #[serde(default)]
    pub mark_success: bool,
}

impl ContinueOn {
    /// True when a failed step with `exit_code` continues: `failure`, a listed exit code, or
    /// `output_matched` (the worker found one of [`ContinueOn::output`] in its output).
    pub fn covers_failure(&self, exit_code: Option<i32>, output_matched: bool) -> bool {
        self.failure
            || exit_code.is_some_and(|c| self.exit_codes.contains(&c))
            || (output_matched && !self.output.is_empty())
    }
}

/// The prefix that makes `expected` or a `continueOn.output` entry a regular expression.
pub const REGEX_PREFIX: &str = "re:";

/// Whether the expanded condition `text` satisfies `expected` (see [`Condition::expected`]):
/// `re:<pattern>` matches the text or one of its lines; any other value equals the text or one
/// of its lines (case-sensitive, as Dagu).
///
/// # Errors
/// The `re:` pattern does not compile (the parser refuses such files, so only hand-built
/// tasks get here).
pub fn expected_matches(expected: &str, text: &str) -> Result<bool, String> {
    match expected.strip_prefix(REGEX_PREFIX) {
        Some(pattern) => {
            let re = regex::Regex::new(pattern).map_err(|e| format!("bad pattern: {e}"))?;
            Ok(re.is_match(text) || text.lines().any(|line| re.is_match(line)))
        }
        None => Ok(text == expected || text.lines().any(|line| line == expected)),
    }
}

/// Whether one output `line` matches one of `patterns` (see [`ContinueOn::output`]): it
/// contains a literal pattern, or a `re:` pattern matches it. Patterns that do not compile
/// match nothing.
pub fn output_matches(patterns: &[String], line: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_prefix(REGEX_PREFIX) {
            Some(re) => regex::Regex::new(re).is_ok_and(|re| re.is_match(line)),
            None => line.contains(pattern.as_str()),
        })
}

/// Reads `preconditions` at `field`; problems are reported, bad entries dropped.
pub(super) fn preconditions(field: &str, value: &Value, report: &mut Report) -> Vec<Condition> {
    match value {
        Value::Null => Vec::new(),
        Value::String(_) | Value::Mapping(_) => entry(field, value, report).into_iter().collect(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, value)| entry(&item(field, index), value, report))
            .collect(),
        other => {
            type_error(
                report,
                field,
                "a command string, a condition map or a list of them",
                other,
            );
            Vec::new()
        }
    }
}

/// One entry: a string (a command check) or a `{condition, expected, negate}` map.
fn entry(field: &str, value: &Value, report: &mut Report) -> Option<Condition> {
    let map = match value {
        Value::String(text) => {
            if text.trim().is_empty() {
                report.error(
                    field,
                    "is empty; give a command whose exit code 0 means \"run\"",
                );
                return None;
            }
            return Some(Condition {
                condition: text.clone(),
                expected: None,
                negate: false,
            });
        }
        Value::Mapping(map) => map,
        other => {
            type_error(
                report,
                field,
                "a command string or a map with condition: (and expected:, negate:)",
                other,
            );
            return None;
        }
    };
    let mut condition = None;
    let mut expected = None;
    let mut negate = false;
    let mut ok = true;
    for e in CONDITION.entries(map, field, report) {
        match e.key {
            ConditionKey::Condition => {
                condition = string(report, &e.field, "a condition string", e.value);
                if condition.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    report.error(&e.field, "is empty; give a command or a text with ${VAR}");
                    ok = false;
                }
            }
            ConditionKey::Expected => expected = read_expected(&e.field, e.value, report, &mut ok),
            ConditionKey::Negate => match e.value {
                Value::Bool(flag) => negate = *flag,
                Value::Null => {}
                other => {
                    type_error(report, &e.field, "true or false", other);
                    ok = false;
                }
            },
        }
    }
    let Some(condition) = condition else {
        report.error(
            format!("{field}.condition"),
            "missing; every precondition needs condition: (a command, or a text compared with \
             expected:)",
        );
        return None;
    };
    ok.then_some(Condition {
        condition,
        expected,
        negate,
    })
}

pub(super) fn read_expected(
    field: &str,
    value: &Value,
    report: &mut Report,
    ok: &mut bool,
) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
            type_error(report, field, "a string (or re:<pattern>)", value);
            *ok = false;
            return None;
        }
        scalar => scalar_text(scalar).unwrap_or_default(),
    };
    if check_pattern(field, &text, report) {
        Some(text)
    } else {
        *ok = false;
        None
    }
}

/// Reports a `re:` pattern that does not compile; true when `text` is usable.
fn check_pattern(field: &str, text: &str, report: &mut Report) -> bool {
    let Some(pattern) = text.strip_prefix(REGEX_PREFIX) else {
        return true;
    };
    match regex::Regex::new(pattern) {
        Ok(_) => true,
        Err(e) => {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or_default().trim().to_owned();
            report.error(
                field,
                format!(
                    "\"{pattern}\" is not a valid regular expression ({last}); fix it, or drop \
                     the re: prefix to compare the text as it is"
                ),
            );
            false
        }
    }
}

/// Reads a step's `continueOn` at `field`: a map, or the word `failed` or `skipped`.
pub(super) fn continue_on(field: &str, value: &Value, report: &mut Report) -> Option<ContinueOn> {
    let map = match value {
        Value::Null => return None,
        Value::Mapping(map) => map,
        Value::String(text) => return continue_on_word(field, text, report),
        other => {
            report.error(
                field,
                format!(
                    "expected failed, skipped or a map (failure:, skipped:, exitCode:, output:, \
                     markSuccess:), found {}",
                    kind(other)
                ),
            );
            return None;
        }
    };
    let mut out = ContinueOn::default();
    for e in CONTINUE_ON.entries(map, field, report) {
        match e.key {
            ContinueKey::Failure => out.failure = flag(&e.field, e.value, report),
            ContinueKey::Skipped => out.skipped = flag(&e.field, e.value, report),
            ContinueKey::MarkSuccess => out.mark_success = flag(&e.field, e.value, report),
            ContinueKey::ExitCode => {
                out.exit_codes = exit_codes(&e.field, &numbers_of_digits(e.value), report);
            }
            ContinueKey::Output => out.output = output_patterns(&e.field, e.value, report),
        }
    }
    Some(out)
}

/// Dagu's string short form of `continueOn` (`types/continueon.go`): `failed` is
/// `failure: true`, `skipped` is `skipped: true`; trimmed, any case.
fn continue_on_word(field: &str, text: &str, report: &mut Report) -> Option<ContinueOn> {
    match text.trim().to_ascii_lowercase().as_str() {
        "failed" => Some(ContinueOn {
            failure: true,
            ..ContinueOn::default()
        }),
        "skipped" => Some(ContinueOn {
            skipped: true,
            ..ContinueOn::default()
        }),
        _ => {
            report.error(
                field,
                format!(
                    "\"{text}\" is not a continueOn word; use failed or skipped, or a map \
                     (failure:, skipped:, exitCode:, output:, markSuccess:)"
                ),
            );
            None
        }
    }
}

fn flag(field: &str, value: &Value, report: &mut Report) -> bool {
    match value {
        Value::Bool(flag) => *flag,
        Value::Null => false,
        other => {
            type_error(report, field, "true or false", other);
            false
        }
    }
}

/// `continueOn.exitCode` as Dagu reads it (`types/continueon.go` `parseIntArray`): a string of
/// digits, alone or in the list, is that number (`"3"`, `[1, "2"]`); other values are left
/// for [`exit_codes`] to check.
fn numbers_of_digits(value: &Value) -> Value {
    let number = |value: &Value| match value {
        Value::String(text) => text.parse::<i64>().map_or(value.clone(), Value::from),
        other => other.clone(),
    };
    match value {
        Value::Sequence(items) => Value::Sequence(items.iter().map(number).collect()),
        other => number(other),
    }
}

/// `continueOn.output`: a text or a list of them, each literal or `re:<pattern>`.
fn output_patterns(field: &str, value: &Value, report: &mut Report) -> Vec<String> {
    let one = |field: &str, value: &Value, report: &mut Report| -> Option<String> {
        let text = string(report, field, "a text or re:<pattern> string", value)?;
        if text.is_empty() {
            report.error(
                field,
                "is empty; give a text the output contains, or remove it",
            );
            return None;
        }
        check_pattern(field, &text, report).then_some(text)
    };
    match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, value)| one(&item(field, index), value, report))
            .collect(),
        other => one(field, other, report).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_compares_the_text_or_one_line() {
        assert_eq!(expected_matches("abc", "abc"), Ok(true));
        assert_eq!(expected_matches("abc", "x\nabc\n"), Ok(true));
        assert_eq!(expected_matches("abc", "abcd"), Ok(false));
        assert_eq!(expected_matches("re:^[0-9]{4,}$", "12345"), Ok(true));
        assert_eq!(expected_matches("re:^[0-9]{4,}$", "12"), Ok(false));
        assert_eq!(expected_matches("re:^b$", "a\nb"), Ok(true));
        assert!(expected_matches("re:(", "x").is_err());
    }

    #[test]
    fn output_patterns_look_for_text_or_a_regex_in_a_line() {
        let patterns = vec!["WARN".to_string(), "re:^code [0-9]+$".to_string()];
        assert!(output_matches(&patterns, "a WARNing"));
        assert!(output_matches(&patterns, "code 42"));
        assert!(!output_matches(&patterns, "code x"));
    }

    #[test]
    fn continue_on_covers_failures_it_names() {
        let c = ContinueOn {
            exit_codes: vec![3],
            output: vec!["x".into()],
            ..ContinueOn::default()
        };
        assert!(c.covers_failure(Some(3), false));
        assert!(!c.covers_failure(Some(1), false));
        assert!(c.covers_failure(None, true));
        assert!(!ContinueOn::default().covers_failure(Some(1), true));
    }
}
