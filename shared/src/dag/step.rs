//! One item of Dagu `steps`, read field by field into a [`StepDraft`]; cross-step rules
//! (unique names, `depends` targets, cycles) live in `graph.rs`.

use serde_yaml::{Mapping, Value};

use super::call_step::{self, CallDraft};
use super::conditions;
use super::env::parse_env;
use super::names::{identifier_problem, step_id_problem, step_name_problem};
use super::reliability;
use super::report::{item, Report};
use super::value::{scalar_text, string, type_error};
use super::yaml_keys::{StepKey, STEP};
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
    pub(super) worker_selector: Option<crate::labels::Labels>,
    /// Dagu `call:` / `run:` with `params:` and `parallel:` (`call_step.rs`).
    pub(super) call: Option<super::Call>,
    /// The index of the item of `steps:` this step came from: a member of a nested list (a
    /// parallel group) shares its list's index. Names are generated from it.
    pub(super) item: usize,
    /// Where the step was written (`steps[2]`, `steps[1][0]`, `steps.build`), for messages.
    pub(super) field: String,
    /// The prefix of a generated name, as Dagu's `generateTypedStepName` picks it.
    pub(super) kind: NameKind,
}

/// What a step without `name` and `id` is named after (Dagu `generateTypedStepName`): its
/// `type` when written (`command_2`, `shell_2`), else `script_2` for a script (a multi-line
/// command is one in Dagu), `cmd_2` for a command, `step_2` for neither.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameKind {
    #[default]
    Step,
    Cmd,
    Script,
    TypeCommand,
    TypeShell,
    /// A call step (Dagu sets its executor type to `dag`).
    Dag,
    /// A call step with `parallel` (Dagu's executor type `parallel`).
    Parallel,
}

impl NameKind {
    /// The prefix of the generated name.
    pub(super) fn prefix(self) -> &'static str {
        match self {
            NameKind::Step => "step",
            NameKind::Cmd => "cmd",
            NameKind::Script => "script",
            NameKind::TypeCommand => "command",
            NameKind::TypeShell => "shell",
            NameKind::Dag => "dag",
            NameKind::Parallel => "parallel",
        }
    }
}

/// Which keys were present and not null, valid or not, so one problem is not reported twice.
#[derive(Default)]
struct Seen {
    action: bool,
    /// `command` was a list (several commands).
    command_list: bool,
    /// `call:` / `run:`, `params:`, `parallel:` as read.
    call: CallDraft,
    /// Fields of keys that mean nothing on a call step (`shell`, `dir`, `timeoutSec`,
    /// `signalOnStop`, `workerSelector`), when written (not null).
    process_only: Vec<String>,
    /// Where `repeatPolicy` was written (not null).
    repeat: Option<String>,
}

/// Read the step at `field` (`steps[3]`): a map of step keys, or (Dagu's shorthand) a string,
/// which is the step's `command`.
pub(super) fn parse_step(value: &Value, field: &str, report: &mut Report) -> StepDraft {
    let shorthand;
    let map = match value {
        Value::Mapping(map) => map,
        Value::String(command) => {
            let mut map = Mapping::new();
            map.insert("command".into(), Value::String(command.clone()));
            shorthand = map;
            &shorthand
        }
        other => {
            type_error(
                report,
                field,
                "a step (a map with command: or script:, or a command string)",
                other,
            );
            return StepDraft::default();
        }
    };
    let mut draft = StepDraft::default();
    let (map, step_type) = plain_shell_type(map, field, report);
    let map = map.as_ref();
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
    finish_call(&mut draft, &mut seen, report);
    check_required(&draft, &seen, field, report);
    draft.kind = name_kind(&draft, step_type, seen.command_list);
    draft
}

/// Turns the call keys into the step's [`super::Call`] (see `call_step::finish`). On a call
/// step the keys that only shape a process are dropped with a warning, and `repeatPolicy` is
/// refused.
fn finish_call(draft: &mut StepDraft, seen: &mut Seen, report: &mut Report) {
    let call = std::mem::take(&mut seen.call);
    let is_call = call.is_call();
    if is_call {
        if let Some(field) = &seen.repeat {
            report.error(
                field,
                "repeatPolicy is not supported on a call step yet; repeat inside the called DAG,                  or call it from a shell step with `dagrid submit --wait`",
            );
        }
        draft.shell = None;
        draft.dir = None;
        draft.timeout_ms = None;
        draft.signal_on_stop = None;
        draft.worker_selector = None;
    }
    let has_command = draft.command.is_some() || draft.script.is_some() || seen.action;
    draft.call = call_step::finish(call, has_command, &seen.process_only, report);
    // A call step has an action: no "neither command nor script" error.
    seen.action |= is_call;
}

/// Dagu's step `type` values that mean a plain shell step, the same as no `type`.
const PLAIN_SHELL_TYPES: &[&str] = &["command", "shell"];

/// The step's map without its `type` key when that type is a plain shell step (`command`,
/// `shell`, or null), with that type; any other `type` stays in the map, to be refused as a
/// Dagu key dagrid does not support yet. Borrows the map unless it must drop the key.
fn plain_shell_type<'a>(
    map: &'a Mapping,
    field: &str,
    report: &mut Report,
) -> (std::borrow::Cow<'a, Mapping>, Option<NameKind>) {
    let Some(value) = map.get("type") else {
        return (std::borrow::Cow::Borrowed(map), None);
    };
    let calls = map.contains_key("call") || map.contains_key("run");
    let kind = match value {
        Value::Null => None,
        // Dagu's executor types of a call step, the same as no `type`.
        Value::String(text) if calls && matches!(text.trim(), "dag" | "parallel") => None,
        Value::String(text) if PLAIN_SHELL_TYPES.contains(&text.trim()) => {
            Some(if text.trim() == "command" {
                NameKind::TypeCommand
            } else {
                NameKind::TypeShell
            })
        }
        Value::String(_) => return (std::borrow::Cow::Borrowed(map), None),
        other => {
            type_error(
                report,
                &super::report::child(field, "type"),
                "a step type string",
                other,
            );
            None
        }
    };
    let mut owned = map.clone();
    owned.remove("type");
    (std::borrow::Cow::Owned(owned), kind)
}

/// The prefix of the name Dagu would generate for this step (see [`NameKind`]).
fn name_kind(draft: &StepDraft, step_type: Option<NameKind>, command_list: bool) -> NameKind {
    if let Some(kind) = step_type {
        return kind;
    }
    if let Some(call) = &draft.call {
        return match call.parallel {
            Some(_) => NameKind::Parallel,
            None => NameKind::Dag,
        };
    }
    let multi_line = |command: &String| !command_list && command.trim().contains('\n');
    if draft.script.is_some() || draft.command.as_ref().is_some_and(multi_line) {
        NameKind::Script
    } else if draft.command.is_some() {
        NameKind::Cmd
    } else {
        NameKind::Step
    }
}

fn read_key(
    key: StepKey,
    field: &str,
    value: &Value,
    draft: &mut StepDraft,
    seen: &mut Seen,
    report: &mut Report,
) {
    let written = !value.is_null();
    match key {
        StepKey::Shell
        | StepKey::Dir
        | StepKey::TimeoutSec
        | StepKey::SignalOnStop
        | StepKey::WorkerSelector
            if written =>
        {
            seen.process_only.push(field.to_owned());
        }
        StepKey::RepeatPolicy if written => seen.repeat = Some(field.to_owned()),
        _ => {}
    }
    match key {
        StepKey::Name => draft.name = read_name(field, value, report),
        StepKey::Id => draft.id = read_id(field, value, report),
        StepKey::Description => draft.description = string(report, field, "a string", value),
        StepKey::Command => {
            seen.action |= !value.is_null();
            seen.command_list = matches!(value, Value::Sequence(_));
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
        StepKey::WorkerSelector => {
            // null: as if unwritten (the DAG's selector); `{}`: any worker.
            draft.worker_selector =
                (!value.is_null()).then(|| super::queueing::worker_selector(field, value, report));
        }
        StepKey::Call => call_step::read_call(field, value, &mut seen.call, report),
        StepKey::Params => call_step::read_params(field, value, &mut seen.call, report),
        StepKey::Parallel => call_step::read_parallel(field, value, &mut seen.call, report),
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
    if let Value::Sequence(items) = value {
        return read_command_list(field, items, report);
    }
    let command = string(
        report,
        field,
        "a command line string or a list of them",
        value,
    )?;
    if command.trim().is_empty() {
        report.error(field, "is empty; give a command line or remove the key");
        return None;
    }
    Some(command)
}

/// Dagu's list form of `command`: several commands run one after the other, each in its own
/// shell, stopping at the first that fails (Dagu's `buildMultipleCommands` and its
/// multi-command executor). dagrid runs them as one shell command line that keeps those
/// semantics: each command in a subshell of its own, joined with `&&`, so `cd` or a variable
/// set by one does not reach the next, the first failure ends the step and its exit code is
/// the step's. Items are strings, or numbers and booleans (their text); a one-key map is read
/// back as `key: value`, since YAML turns an unquoted `echo a: b` into one; empty items are
/// skipped, as in Dagu.
fn read_command_list(field: &str, items: &[Value], report: &mut Report) -> Option<String> {
    let mut commands = Vec::with_capacity(items.len());
    for (index, value) in items.iter().enumerate() {
        let text = match value {
            Value::Mapping(map) if map.len() == 1 => map
                .iter()
                .next()
                .and_then(|(k, v)| Some(format!("{}: {}", scalar_text(k)?, scalar_text(v)?))),
            other => scalar_text(other).filter(|_| !other.is_null()),
        };
        let Some(text) = text else {
            type_error(report, &item(field, index), "a command line string", value);
            continue;
        };
        if !text.trim().is_empty() {
            commands.push(text.trim().to_owned());
        }
    }
    if commands.is_empty() {
        report.error(
            field,
            "lists no command; give at least one command line or remove the key",
        );
        return None;
    }
    if commands.len() == 1 {
        return commands.pop();
    }
    let subshells: Vec<String> = commands.iter().map(|c| format!("(\n{c}\n)")).collect();
    Some(subshells.join(" && "))
}

fn read_script(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let script = string(report, field, "a script string", value)?;
    if script.trim().is_empty() {
        report.error(field, "is empty; give the script text or remove the key");
        return None;
    }
    Some(script)
}

/// A shell command line, or (Dagu v2) a list of words joined with shell quoting (Dagu's
/// `ShellValue`; step and DAG level).
pub(super) fn read_shell(field: &str, value: &Value, report: &mut Report) -> Option<String> {
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
    if shell == "direct" {
        report.error(
            field,
            "Dagu's `shell: direct` (run the command without a shell) is not supported yet; \
             remove it: a command without shell syntax already runs without a shell",
        );
        return None;
    }
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

/// A variable name, or the map form `{name, key, omit}` (`output.rs`); a leading `$` is
/// stripped, an empty value means no output (as in Dagu).
fn read_output(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let output = match value {
        Value::Mapping(map) => super::output::map_name(field, map, report)?,
        other => string(report, field, "a variable name or a map with name:", other)?,
    };
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
    match (&draft.command, &draft.script) {
        (Some(_), Some(_)) if seen.command_list => report.error(
            format!("{field}.command"),
            format!(
                "{label} has a list of commands and a script; with a script, command names \
                 the script's interpreter (command: python3): give one command, or move the \
                 commands into the script"
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
