//! Dagu's `handlerOn` (v2 `handler_on`): steps run after the main steps, by outcome.
//!
//! The map takes `success`, `failure`, `cancel` (v1) or `abort` (v2; the two are one key, both
//! accepted in either key style) and `exit`. Each value is a step like those of `steps:`
//! (command/script/shell/env/dir/output/retryPolicy/timeoutSec/signalOnStop), without
//! `depends` (handlers run once every main step is final), with a `name` that defaults to
//! Dagu's internal one (`onSuccess`, `onFailure`, `onCancel`, `onExit`) and must differ from
//! every main step's name and from the other handlers' names.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use super::report::{child, item, Report};
use super::step::{parse_step, StepDraft};
use super::value::type_error;
use super::yaml_keys::{HandlerKey, HANDLER_ON};
use super::Step;

/// Which handler of Dagu's `handlerOn` a step is; the API shows it as the handler step's
/// `handler` field.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HandlerOn {
    /// `success`: runs when the main steps succeeded.
    Success,
    /// `failure`: runs when the main steps failed.
    Failure,
    /// `cancel` (v1) / `abort` (v2): runs when the run was stopped (`dagrid stop`, the stop
    /// route, or the DAG's `timeoutSec`).
    Abort,
    /// `exit`: runs last, whatever happened.
    Exit,
}

impl HandlerOn {
    /// Every handler, in the order a run could run them (one of the first three, then exit).
    pub const ALL: [HandlerOn; 4] = [
        HandlerOn::Success,
        HandlerOn::Failure,
        HandlerOn::Abort,
        HandlerOn::Exit,
    ];

    /// The lowercase name used in the API (`success`, `failure`, `abort`, `exit`).
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerOn::Success => "success",
            HandlerOn::Failure => "failure",
            HandlerOn::Abort => "abort",
            HandlerOn::Exit => "exit",
        }
    }

    /// The step name Dagu gives the handler (`onSuccess`, `onFailure`, `onCancel`, `onExit`),
    /// used when the handler has no `name:`.
    pub fn default_name(self) -> &'static str {
        match self {
            HandlerOn::Success => "onSuccess",
            HandlerOn::Failure => "onFailure",
            HandlerOn::Abort => "onCancel",
            HandlerOn::Exit => "onExit",
        }
    }
}

/// The handler steps of a DAG (Dagu `handlerOn`); each `None` when not defined. Their
/// `depends` is always empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handlers {
    /// `success`.
    #[serde(default)]
    pub success: Option<Step>,
    /// `failure`.
    #[serde(default)]
    pub failure: Option<Step>,
    /// `cancel` / `abort`.
    #[serde(default)]
    pub abort: Option<Step>,
    /// `exit`.
    #[serde(default)]
    pub exit: Option<Step>,
}

impl Handlers {
    /// The step of handler `on`, if defined.
    #[must_use]
    pub fn get(&self, on: HandlerOn) -> Option<&Step> {
        match on {
            HandlerOn::Success => self.success.as_ref(),
            HandlerOn::Failure => self.failure.as_ref(),
            HandlerOn::Abort => self.abort.as_ref(),
            HandlerOn::Exit => self.exit.as_ref(),
        }
    }

    /// True when no handler is defined.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        HandlerOn::ALL.iter().all(|&on| self.get(on).is_none())
    }

    /// The defined handlers, in [`HandlerOn::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (HandlerOn, &Step)> {
        HandlerOn::ALL
            .into_iter()
            .filter_map(|on| self.get(on).map(|step| (on, step)))
    }

    /// The handler named `name`, if any.
    #[must_use]
    pub fn named(&self, name: &str) -> Option<(HandlerOn, &Step)> {
        self.iter().find(|(_, step)| step.name == name)
    }

    fn slot(&mut self, on: HandlerOn) -> &mut Option<Step> {
        match on {
            HandlerOn::Success => &mut self.success,
            HandlerOn::Failure => &mut self.failure,
            HandlerOn::Abort => &mut self.abort,
            HandlerOn::Exit => &mut self.exit,
        }
    }
}

/// What `handlerOn` held: the handlers and the field path each was written at
/// (`handlerOn.cancel`), for later messages.
#[derive(Debug, Default)]
pub(super) struct HandlersDraft {
    pub(super) handlers: Handlers,
    fields: Vec<(HandlerOn, String)>,
}

/// Read `handlerOn` at `field`; null is no handler.
pub(super) fn parse_handlers(field: &str, value: &Value, report: &mut Report) -> HandlersDraft {
    let mut draft = HandlersDraft::default();
    let map = match value {
        Value::Null => return draft,
        Value::Mapping(map) => map,
        other => {
            type_error(
                report,
                field,
                "a map of handlers (success:, failure:, cancel: or abort:, exit:)",
                other,
            );
            return draft;
        }
    };
    for entry in HANDLER_ON.entries(map, field, report) {
        if entry.value.is_null() {
            continue;
        }
        let on = match entry.key {
            HandlerKey::Success => HandlerOn::Success,
            HandlerKey::Failure => HandlerOn::Failure,
            HandlerKey::Abort => HandlerOn::Abort,
            HandlerKey::Exit => HandlerOn::Exit,
        };
        *draft.handlers.slot(on) = parse_handler(on, &entry.field, entry.value, report);
        draft.fields.push((on, entry.field));
    }
    draft
}

/// One handler step: a step without `depends`, named after Dagu's handler name unless it has
/// a `name:`.
fn parse_handler(on: HandlerOn, field: &str, value: &Value, report: &mut Report) -> Option<Step> {
    let Value::Mapping(map) = value else {
        if let Value::String(command) = value {
            // Dagu refuses this short form too (a handler decodes into a step struct).
            report.error(
                field,
                format!(
                    "expected a step, found a string; write it as a map, as Dagu requires: \
                     command: {command:?}"
                ),
            );
            return None;
        }
        type_error(
            report,
            field,
            "a step (a map with command: or script:)",
            value,
        );
        return None;
    };
    let mut map: Mapping = map.clone();
    for key in ["depends"] {
        if map.remove(key).is_some() {
            report.error(
                child(field, key),
                "a handler runs once every main step is final and cannot depend on steps; \
                 remove depends",
            );
        }
    }
    for key in ["continueOn", "continue_on"] {
        if map.remove(key).is_some() {
            report.error(
                child(field, key),
                "a handler has no dependants, so continueOn would do nothing; remove it",
            );
        }
    }
    let has_name = map.get("name").is_some_and(|name| !name.is_null());
    if !has_name {
        map.insert("name".into(), on.default_name().into());
    }
    let draft = parse_step(&Value::Mapping(map), field, report);
    Some(step_of(draft))
}

/// The step of a handler's draft (no depends).
fn step_of(draft: StepDraft) -> Step {
    Step {
        name: draft.name.unwrap_or_default(),
        description: draft.description,
        command: draft.command,
        script: draft.script,
        shell: draft.shell,
        dir: draft.dir,
        env: draft.env,
        depends: Vec::new(),
        output: draft.output,
        retry: draft.retry,
        timeout_ms: draft.timeout_ms,
        signal_on_stop: draft.signal_on_stop,
        preconditions: draft.preconditions,
        continue_on: draft.continue_on,
        repeat: draft.repeat,
        worker_selector: draft.worker_selector,
        call: draft.call,
    }
}

/// Reports handler names that equal a main step's name or another handler's name (run state
/// keeps every step, handlers included, by name).
pub(super) fn check_names(draft: &HandlersDraft, steps: &[Step], report: &mut Report) {
    let mains: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| (step.name.as_str(), index))
        .collect();
    let mut seen: HashMap<&str, HandlerOn> = HashMap::new();
    for (on, field) in &draft.fields {
        let Some(step) = draft.handlers.get(*on) else {
            continue;
        };
        let name = step.name.as_str();
        if name.is_empty() {
            continue;
        }
        let at = child(field, "name");
        if let Some(&index) = mains.get(name) {
            report.error(
                at,
                format!(
                    "\"{name}\" is also the name of {}; a handler's name must differ from every \
                     step's name, rename one",
                    item("steps", index)
                ),
            );
        } else if let Some(first) = seen.insert(name, *on) {
            report.error(
                at,
                format!(
                    "\"{name}\" is also the name of the {} handler; handler names must be \
                     unique, rename one",
                    first.as_str()
                ),
            );
        }
    }
}
