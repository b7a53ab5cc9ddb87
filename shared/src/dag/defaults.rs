//! Dagu's DAG-level `defaults` (`spec/defaults.go`): step values that every step and every
//! `handler_on` step takes unless it sets the key itself, merged into each step's YAML map
//! before the steps are read, so a default is read exactly as the step's own key would be.
//!
//! - `continue_on`, `retry_policy`, `repeat_policy`, `timeout_sec`, `signal_on_stop`: the
//!   default applies when the step's map has no such key (in either spelling; a key written
//!   with a null value counts as set, as in Dagu, which looks at key presence). Handlers do not
//!   take `continue_on` (they have no dependants).
//! - `env`, `preconditions`: added before the step's own entries (the step's later entries win
//!   for env, as in Dagu's `Prepend`; preconditions are all checked).
//! - A string step (`- echo hi`) becomes `{command: echo hi}` first, as Dagu's
//!   `normalizeStepData` does, so it takes the defaults too; nested lists and the map form of
//!   `steps` are walked.
//! - A call step (`call:` / `run:`) does not take `timeout_sec`, `signal_on_stop` or
//!   `repeat_policy` (it runs no process).
//! - A default whose step key dagrid does not run yet (`mail_on_error`, `agent`, …) is refused
//!   once, at `defaults.<key>`; so is a value the step key would refuse
//!   (`defaults.retry_policy.limit`), and that default is then not merged.

use serde_yaml::{Mapping, Value};

use super::env::parse_env;
use super::report::Report;
use super::value::type_error;
use super::yaml_keys::{unsupported_key, DefaultsKey, DEFAULTS, STEP};
use super::{conditions, reliability};

/// One default to merge: which key, the spelling written under `defaults`, and its value.
struct Default {
    key: DefaultsKey,
    spelling: &'static str,
    value: Value,
}

/// Merge the `defaults` of `root` (the whole file) into its steps and handlers; reports a
/// `defaults` that is not a map, unknown keys and keys dagrid does not run yet. Does nothing
/// when the file has no `defaults`.
pub(super) fn apply(root: &mut Value, report: &mut Report) {
    let Value::Mapping(top) = root else {
        return;
    };
    let defaults = read(top.get("defaults"), report);
    if defaults.is_empty() {
        return;
    }
    if let Some(steps) = top.get_mut("steps") {
        match steps {
            Value::Sequence(items) => items.iter_mut().for_each(|item| list_item(item, &defaults)),
            // Values of the map form are step maps only (Dagu's schema), never strings.
            Value::Mapping(by_name) => by_name
                .values_mut()
                .filter(|step| step.is_mapping())
                .for_each(|step| merge_into(step, &defaults, false)),
            _ => {}
        }
    }
    for key in ["handler_on", "handlerOn"] {
        if let Some(Value::Mapping(handlers)) = top.get_mut(key) {
            handlers
                .values_mut()
                .filter(|step| step.is_mapping())
                .for_each(|step| merge_into(step, &defaults, true));
        }
    }
}

/// The usable defaults of the `defaults` value, in file order.
fn read(value: Option<&Value>, report: &mut Report) -> Vec<Default> {
    let map = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Mapping(map)) => map,
        Some(other) => {
            type_error(
                report,
                "defaults",
                "a map of step keys (retry_policy:, continue_on:, timeout_sec:, env:, …)",
                other,
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in DEFAULTS.entries(map, "defaults", report) {
        let spelling = entry.field.trim_start_matches("defaults.");
        let Some(spelling) = DEFAULTS
            .spellings_of(entry.key)
            .iter()
            .find(|s| **s == spelling)
        else {
            continue;
        };
        if STEP.is_unsupported(spelling) {
            report.error(&entry.field, unsupported_key(spelling));
            continue;
        }
        if entry.value.is_null() || !valid(entry.key, &entry.field, entry.value, report) {
            continue;
        }
        out.push(Default {
            key: entry.key,
            spelling,
            value: entry.value.clone(),
        });
    }
    out
}

/// Whether a default reads as the step key it sets; its problems are reported once, at
/// `defaults.<key>…`, instead of at every step that would take it. `repeat_policy` is read by
/// the steps that take it.
fn valid(key: DefaultsKey, field: &str, value: &Value, report: &mut Report) -> bool {
    let mut scratch = Report::default();
    match key {
        DefaultsKey::ContinueOn => {
            conditions::continue_on(field, value, &mut scratch);
        }
        DefaultsKey::RetryPolicy => {
            reliability::retry_policy(field, value, &mut scratch);
        }
        DefaultsKey::TimeoutSec => {
            reliability::timeout(field, value, &mut scratch);
        }
        DefaultsKey::SignalOnStop => {
            reliability::signal_on_stop(field, value, &mut scratch);
        }
        DefaultsKey::Env => {
            parse_env(value, field, &mut scratch);
        }
        DefaultsKey::Preconditions => {
            conditions::preconditions(field, value, &mut scratch);
        }
        DefaultsKey::RepeatPolicy | DefaultsKey::MailOnError | DefaultsKey::Agent => {}
    }
    match scratch.finish() {
        Ok(_) => true,
        Err(errors) => {
            for error in errors.0 {
                report.error(error.field, error.message);
            }
            false
        }
    }
}

/// An item of the `steps` list: a step map, a string step, or a nested list of them.
fn list_item(item: &mut Value, defaults: &[Default]) {
    match item {
        Value::Sequence(group) => group
            .iter_mut()
            .for_each(|inner| merge_into(inner, defaults, false)),
        other => merge_into(other, defaults, false),
    }
}

/// Merge `defaults` into one step (a map, or a string step made a map first).
fn merge_into(step: &mut Value, defaults: &[Default], handler: bool) {
    if let Value::String(command) = step {
        let mut map = Mapping::new();
        map.insert("command".into(), Value::String(std::mem::take(command)));
        *step = Value::Mapping(map);
    }
    let Value::Mapping(map) = step else {
        return;
    };
    // A call step runs no process: the defaults that shape one do not reach it (its own
    // such keys are warned about or refused by the step reader).
    let call = map.contains_key("call") || map.contains_key("run");
    let process_only = |key| {
        matches!(
            key,
            DefaultsKey::TimeoutSec | DefaultsKey::SignalOnStop | DefaultsKey::RepeatPolicy
        )
    };
    for default in defaults {
        if handler && default.key == DefaultsKey::ContinueOn {
            continue;
        }
        if call && process_only(default.key) {
            continue;
        }
        let own = DEFAULTS
            .spellings_of(default.key)
            .iter()
            .find(|s| map.contains_key(**s))
            .copied();
        let additive = matches!(default.key, DefaultsKey::Env | DefaultsKey::Preconditions);
        match own {
            None => {
                map.insert(default.spelling.into(), default.value.clone());
            }
            Some(spelling) if additive => {
                let own = map.get(spelling).cloned().unwrap_or(Value::Null);
                if let Some(both) = prepend(default.key, &default.value, own) {
                    map.insert(spelling.into(), both);
                }
            }
            Some(_) => {}
        }
    }
}

/// The default's entries followed by the step's own, as one list; `None` when the step's
/// value is of a type the step reader will refuse anyway (it is then left as written).
fn prepend(key: DefaultsKey, default: &Value, own: Value) -> Option<Value> {
    let mut items = entries(key, default)?;
    if !own.is_null() {
        items.extend(entries(key, &own)?);
    }
    Some(Value::Sequence(items))
}

/// A value as list entries: a list's items; a map's entries one map each for env (keeping
/// their order), the map itself for a precondition; a string as one entry.
fn entries(key: DefaultsKey, value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Sequence(items) => Some(items.clone()),
        Value::Mapping(map) if key == DefaultsKey::Env => Some(
            map.iter()
                .map(|(k, v)| {
                    let mut one = Mapping::new();
                    one.insert(k.clone(), v.clone());
                    Value::Mapping(one)
                })
                .collect(),
        ),
        Value::Mapping(_) | Value::String(_) => Some(vec![value.clone()]),
        _ => None,
    }
}
