//! One item of Dagu `steps`, read field by field into a [`StepDraft`]; cross-step rules
//! (unique names, `depends` targets, cycles) live in `graph.rs`.

use serde_yaml::Value;

use super::conditions;
use super::env::parse_env;
use super::keys::{StepKey, STEP};
use super::names::{identifier_problem, step_id_problem, step_name_problem};
use super::reliability;
use super::report::{item, Report};
use super::value::{string, type_error};
use super::{Condition, ContinueOn, EnvVar, RetryPolicy};

/// A step as written, before `depends` is resolved. Invalid fields are reported and left `None`.
#[derive(Debug, Default)]
pub(super) struct StepDraft {
    pub(super) name: Option<String>,
    pub(super) id: Option<String>,
    pub(super) description: Option<String>,
    pub(super) command: Option<String>,
    pub(super) script: Option<String>,
    pub(super) shell: Option<String>,
    pub(super) dir: Option<String>,
    pub(super) env: Vec<EnvVar>,
    /// `None` when the step has no `depends` key (a chain then adds the previous step).
    pub(super) depends: Option<Vec<String>>,
    pub(super) output: Option<String>,
    pub(super) retry: Option<RetryPolicy>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) signal_on_stop: Option<String>,
    pub(super) preconditions: Vec<Condition>,
    pub(super) continue_on: Option<ContinueOn>,
    pub(super) repeat: Option<super::RepeatPolicy>,
}

/// Which keys were present and not null, valid or not, so one problem is not reported twice.
#[derive(Default)]
struct Seen {
    name: bool,
    action: bool,
}

/// Read the step at `field` (`steps[3]`).
pub(super) fn parse_step(value: &Value, field: &str, report: &mut Report) -> StepDraft {
    let map = match value {
        Value::Mapping(map) => map,
        Value::String(_) => {
            report.error(
                field,
                "expected a step (a map with name: and command:), found a string; write it as \
                 - name: NAME followed by command: COMMAND",
            );
            return StepDraft::default();
        }
        other => {
            type_error(
                report,
                field,
                "a step (a map with name: and command:)",
                other,
            );
            return StepDraft::default();
        }
    };
    let mut draft = StepDraft::default();
    let mut seen = Seen::default();
    for entry in STEP.entries(map, field, report) {
        read_key(
            entry.key,
            &entry.field,
            entry.value,
            &mut draft,
            &mut seen,
            report,
        );
    }
    check_required(&draft, &seen, field, report);
    draft
}

fn read_key(
    key: StepKey,
    field: &str,
    value: &Value,
    draft: &mut StepDraft,
    seen: &mut Seen,
    report: &mut Report,
) {
    match key {
        StepKey::Name => {
            seen.name |= !value.is_null();
            draft.name = read_name(field, value, report);
        }
        StepKey::Id => draft.id = read_id(field, value, report),
        StepKey::Description => draft.description = string(report, field, "a string", value),
        StepKey::Command => {
            seen.action |= !value.is_null();
            draft.command = read_command(field, value, report);
        }
        StepKey::Script => {
            seen.action |= !value.is_null();
            draft.script = read_script(field, value, report);
        }
        StepKey::Shell => draft.shell = read_shell(field, value, report),
        StepKey::Dir => {
            let dir = string(report, field, "a directory path string", value);
            draft.dir = dir.filter(|dir| !dir.trim().is_empty());
        }
        StepKey::Env => draft.env = parse_env(value, field, report),
        StepKey::Depends => draft.depends = Some(read_depends(field, value, report)),
        StepKey::Output => draft.output = read_output(field, value, report),
        StepKey::RetryPolicy => draft.retry = reliability::retry_policy(field, value, report),
        StepKey::TimeoutSec => draft.timeout_ms = reliability::timeout(field, value, report),
        StepKey::SignalOnStop => {
            draft.signal_on_stop = reliability::signal_on_stop(field, value, report);
        }
        StepKey::Preconditions => {
            draft.preconditions = conditions::preconditions(field, value, report);
        }
        StepKey::ContinueOn => draft.continue_on = conditions::continue_on(field, value, report),
        StepKey::RepeatPolicy => draft.repeat = super::repeat::repeat_policy(field, value, report),
    }
}

fn read_name(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let name = string(report, field, "a step name string", value)?;
    let name = name.trim();
    if let Some(problem) = step_name_problem(name) {
        report.error(field, problem);
        return None;
    }
    Some(name.to_owned())
}

fn read_id(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let id = string(report, field, "a step id string", value)?;
    let id = id.trim();
    if let Some(problem) = step_id_problem(id) {
        report.error(field, problem);
        return None;
    }
    Some(id.to_owned())
}

fn read_command(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    if let Value::Sequence(_) = value {
        report.error(
            field,
            "a list of commands is not supported yet; join them with && or use script",
        );
        return None;
    }
    let command = string(report, field, "a command line string", value)?;
    if command.trim().is_empty() {
        report.error(field, "is empty; give a command line or remove the key");
        return None;
    }
    Some(command)
}

fn read_script(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let script = string(report, field, "a script string", value)?;
    if script.trim().is_empty() {
        report.error(field, "is empty; give the script text or remove the key");
        return None;
    }
    Some(script)
}

/// A shell command line, or (Dagu v2) a list of words joined with shell quoting.
fn read_shell(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let shell = match value {
        Value::Sequence(words) => {
            let mut texts = Vec::with_capacity(words.len());
            for (index, word) in words.iter().enumerate() {
                texts.extend(string(report, &item(field, index), "a string", word));
            }
            (texts.len() == words.len()).then(|| shell_words::join(&texts))
        }
        other => string(
            report,
            field,
            "a shell command string or a list of words",
            other,
        ),
    }?;
    let shell = shell.trim();
    (!shell.is_empty()).then(|| shell.to_owned())
}

/// Step names, trimmed; `null` is an explicit empty list.
fn read_depends(field: &str, value: &Value, report: &mut Report) -> Vec<String> {
    const EXPECTED: &str = "a step name or a list of step names";
    match value {
        Value::Null => Vec::new(),
        Value::String(name) => vec![name.trim().to_owned()],
        Value::Sequence(names) => {
            let mut out = Vec::with_capacity(names.len());
            for (index, name) in names.iter().enumerate() {
                let item_field = item(field, index);
                match name {
                    Value::String(name) => out.push(name.trim().to_owned()),
                    other => type_error(report, &item_field, "a step name", other),
                }
            }
            out
        }
        other => {
            type_error(report, field, EXPECTED, other);
            Vec::new()
        }
    }
}

/// A variable name; a leading `$` is stripped, an empty value means no output (as in Dagu).
fn read_output(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let output = string(report, field, "a variable name", value)?;
    let trimmed = output.trim();
    let name = trimmed.strip_prefix('$').unwrap_or(trimmed);
    if name.is_empty() {
        return None;
    }
    if let Some(problem) = identifier_problem(name, "output variable name") {
        report.error(field, problem);
        return None;
    }
    Some(name.to_owned())
}

fn check_required(draft: &StepDraft, seen: &Seen, field: &str, report: &mut Report) {
    let label = match &draft.name {
        Some(name) => format!("step \"{name}\""),
        None => format!("the step at {field}"),
    };
    if !seen.name {
        report.error(
            format!("{field}.name"),
            "missing; every step needs a name: (depends, run history and retries address \
             steps by name)",
        );
    }
    match (&draft.command, &draft.script) {
        (Some(_), Some(_)) => report.error(
            field,
            format!(
                "{label} has both command and script; keep one (to run a script with an \
                 interpreter, name it in shell:, e.g. shell: python3)"
            ),
        ),
        (None, None) if !seen.action => report.error(
            field,
            format!(
                "{label} has neither command nor script; add command: (a command line) or \
                 script: (an inline script)"
            ),
        ),
        _ => {}
    }
}
