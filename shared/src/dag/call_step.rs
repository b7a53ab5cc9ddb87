//! Reading a call step's keys: Dagu's `call:` (v1 `run:`), the step's `params:` and
//! `parallel:` (Dagu `buildStepSubDAG`, `buildStepParallel` and `parseParallelItems` in
//! internal/core/spec/step.go) into a [`Call`]. The parts are read key by key into a
//! [`CallDraft`]; [`finish`] checks how they combine with the step's other keys.

use serde_yaml::{Mapping, Value};

use super::names::{dag_name_problem, identifier_problem, is_identifier};
use super::report::{child, item, Report};
use super::value::{describe_key, key_text, kind, scalar_text, string, type_error};
use super::{
    Call, Parallel, ParallelItem, ParallelItems, DEFAULT_MAX_CONCURRENT, MAX_PARALLEL_ITEMS,
    NAME_RULE,
};

/// The call keys of one step as read, each `Some` when the key was present and valid.
#[derive(Debug, Default)]
pub(super) struct CallDraft {
    /// `call:` / `run:`: the DAG name, trimmed (`None` when absent or invalid).
    pub(super) dag: Option<String>,
    /// Where `call:` was written (`steps[2].call`), when present (valid or not).
    pub(super) call_field: Option<String>,
    /// `params:`, read; `params_field` is set when the key was present (not null).
    pub(super) params: Vec<(Option<String>, String)>,
    pub(super) params_field: Option<String>,
    /// `parallel:`, read; `parallel_field` is set when the key was present (not null).
    pub(super) parallel: Option<Parallel>,
    pub(super) parallel_field: Option<String>,
}

impl CallDraft {
    /// Whether the step has a `call:` / `run:` key (valid or not).
    pub(super) fn is_call(&self) -> bool {
        self.call_field.is_some()
    }
}

/// `call:` / `run:`: a DAG name, or a template holding `$` (expanded when the step runs).
pub(super) fn read_call(field: &str, value: &Value, draft: &mut CallDraft, report: &mut Report) {
    if value.is_null() {
        report.error(
            field,
            "is empty; give the name of the DAG to run (call: <dag name>) or remove the key",
        );
        draft.call_field = Some(field.to_owned());
        return;
    }
    draft.call_field = Some(field.to_owned());
    let Some(name) = string(report, field, "a DAG name string", value) else {
        return;
    };
    let name = name.trim();
    if name.is_empty() {
        report.error(
            field,
            "is empty; give the name of the DAG to run (call: <dag name>) or remove the key",
        );
        return;
    }
    if !name.contains('$') {
        if let Some((_, last)) = name.rsplit_once('/') {
            let last = last.trim_end_matches(".yaml").trim_end_matches(".yml");
            report.error(
                field,
                format!(
                    "\"{name}\" names a DAG file by its path (Dagu looks it up in its DAGs \
                     directory); dagrid calls a registered DAG by its name: write the called \
                     file's name: (or its file name without .yaml, e.g. call: {last})"
                ),
            );
            return;
        }
        if let Some(problem) = dag_name_problem(name) {
            report.error(
                field,
                format!("\"{name}\" is not a valid DAG name: it {problem}; {NAME_RULE}"),
            );
            return;
        }
    }
    draft.dag = Some(name.to_owned());
}

/// A step's `params:` (the called DAG's params): a command-line string (split with shell
/// quoting; a token `NAME=value` with NAME an identifier is named, else positional, as the
/// DAG-level string form), a map of `NAME: value` (numbers and booleans as their text), or a
/// list of `NAME=value` strings, positional values and `NAME: value` maps.
pub(super) fn read_params(field: &str, value: &Value, draft: &mut CallDraft, report: &mut Report) {
    if value.is_null() {
        return;
    }
    draft.params_field = Some(field.to_owned());
    draft.params = match value {
        Value::String(text) => match shell_words::split(text) {
            Ok(tokens) => tokens.iter().map(|t| token(t)).collect(),
            Err(err) => {
                report.error(
                    field,
                    format!(
                        "cannot split the params like a command line ({err}); close the quote, \
                         or use the map form (params: {{NAME: value}})"
                    ),
                );
                Vec::new()
            }
        },
        Value::Number(_) | Value::Bool(_) => vec![(None, scalar_text(value).unwrap_or_default())],
        Value::Mapping(map) => map_entries(field, map, report),
        Value::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, entry) in items.iter().enumerate() {
                let at = item(field, index);
                match entry {
                    Value::Mapping(map) => out.extend(map_entries(&at, map, report)),
                    Value::String(text) => out.push(token(text)),
                    Value::Number(_) | Value::Bool(_) => {
                        out.push((None, scalar_text(entry).unwrap_or_default()));
                    }
                    other => type_error(
                        report,
                        &at,
                        "a NAME=value string or a NAME: value map",
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
                "a params string (\"A=1 B=2\") or a map of NAME: value",
                other,
            );
            Vec::new()
        }
    };
}

/// A token `NAME=value` with NAME an identifier is named; anything else is positional (the
/// rule of the DAG-level string form, `params.rs` `from_token`).
fn token(text: &str) -> (Option<String>, String) {
    match text.split_once('=') {
        Some((name, value)) if is_identifier(name) => (Some(name.to_owned()), value.to_owned()),
        _ => (None, text.to_owned()),
    }
}

/// The entries of a `NAME: value` map, in file order, as named params.
fn map_entries(field: &str, map: &Mapping, report: &mut Report) -> Vec<(Option<String>, String)> {
    named_entries(field, map, "param name", report)
        .into_iter()
        .map(|(name, value)| (Some(name), value))
        .collect()
}

/// The entries of a map whose keys are names (identifiers) and values scalars (numbers and
/// booleans as their text, null as empty), in file order; bad entries are reported and left
/// out.
fn named_entries(
    field: &str,
    map: &Mapping,
    what: &str,
    report: &mut Report,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let Some(name) = key_text(key) else {
            report.error(
                field,
                format!("{what}s must be strings, found {}", describe_key(key)),
            );
            continue;
        };
        let at = child(field, name);
        if let Some(problem) = identifier_problem(name, what) {
            report.error(&at, problem);
            continue;
        }
        match scalar_text(value) {
            Some(text) => out.push((name.to_owned(), text)),
            None => type_error(report, &at, "a string, number or boolean value", value),
        }
    }
    out
}

/// `parallel:` (Dagu `buildStepParallel`): a string (a variable reference such as
/// `${ITEMS}`, expanded when the step runs), a list of items, or a map with `items` (either
/// of those) and `max_concurrent` / `maxConcurrent` (a positive integer, default
/// [`DEFAULT_MAX_CONCURRENT`]).
pub(super) fn read_parallel(
    field: &str,
    value: &Value,
    draft: &mut CallDraft,
    report: &mut Report,
) {
    if value.is_null() {
        return;
    }
    draft.parallel_field = Some(field.to_owned());
    let items = match value {
        Value::Mapping(map) => return draft.parallel = parallel_map(field, map, report),
        other => items(field, other, report),
    };
    draft.parallel = items.map(|items| Parallel {
        items,
        max_concurrent: DEFAULT_MAX_CONCURRENT,
    });
}

/// The map form of `parallel`.
fn parallel_map(field: &str, map: &Mapping, report: &mut Report) -> Option<Parallel> {
    let mut items_value = None;
    let mut max_concurrent = DEFAULT_MAX_CONCURRENT;
    let mut max_spelling: Option<&str> = None;
    let mut valid = true;
    for (key, value) in map {
        let Some(key) = key_text(key) else {
            report.error(
                field,
                format!("keys must be strings, found {}", describe_key(key)),
            );
            valid = false;
            continue;
        };
        let at = child(field, key);
        match key {
            "items" => items_value = Some(value),
            "max_concurrent" | "maxConcurrent" => {
                if let Some(first) = max_spelling.replace(key) {
                    report.error(
                        &at,
                        format!(
                            "\"{first}\" and \"{key}\" are two spellings of the same key; keep one"
                        ),
                    );
                    valid = false;
                    continue;
                }
                match positive(value) {
                    Some(n) => max_concurrent = n,
                    None => {
                        report.error(
                            &at,
                            format!(
                                "must be a positive integer, e.g. 5 (found {}): the most child \
                                 runs of this step active at once; leave it out for {}",
                                found(value),
                                DEFAULT_MAX_CONCURRENT
                            ),
                        );
                        valid = false;
                    }
                }
            }
            other => {
                report.error(
                    &at,
                    format!(
                        "unknown key \"{other}\"; valid keys here: items, max_concurrent \
                         (or maxConcurrent)"
                    ),
                );
                valid = false;
            }
        }
    }
    let Some(items_value) = items_value.filter(|v| !v.is_null()) else {
        report.error(
            child(field, "items"),
            "is missing; give the items to run the DAG over: a list, or a variable such as \
             ${ITEMS} holding a JSON array or lines",
        );
        return None;
    };
    let items = items(&child(field, "items"), items_value, report)?;
    valid.then_some(Parallel {
        items,
        max_concurrent,
    })
}

/// A positive integer that fits `u32`.
fn positive(value: &Value) -> Option<u32> {
    let n = value.as_u64()?;
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// A value's text for a message (`0`, `a string`).
fn found(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}

/// The items of `parallel` (or of its `items`): a variable reference, or a list.
fn items(field: &str, value: &Value, report: &mut Report) -> Option<ParallelItems> {
    match value {
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                report.error(
                    field,
                    "is empty; give a variable such as ${ITEMS} (a JSON array or one item per \
                     line) or a list of items",
                );
                return None;
            }
            Some(ParallelItems::Variable(text.to_owned()))
        }
        Value::Sequence(list) => item_list(field, list, report).map(ParallelItems::List),
        other => {
            type_error(
                report,
                field,
                "a variable such as ${ITEMS}, a list of items, or a map with items: and \
                 max_concurrent:",
                other,
            );
            None
        }
    }
}

/// A written list of items (Dagu `parseParallelItems`): scalars are values (numbers and
/// booleans as their text), maps are a child's named params.
fn item_list(field: &str, list: &[Value], report: &mut Report) -> Option<Vec<ParallelItem>> {
    if list.is_empty() {
        report.error(
            field,
            "lists no items; give at least one item, or remove the step",
        );
        return None;
    }
    if list.len() > MAX_PARALLEL_ITEMS {
        report.error(
            field,
            format!(
                "lists {} items; a parallel step runs at most {MAX_PARALLEL_ITEMS} child runs, \
                 split the items over several steps",
                list.len()
            ),
        );
        return None;
    }
    let errors_before = report.error_count();
    let mut out = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let at = item(field, index);
        match entry {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                out.push(ParallelItem::Value(scalar_text(entry).unwrap_or_default()));
            }
            Value::Mapping(map) => {
                out.push(ParallelItem::Params(named_entries(
                    &at,
                    map,
                    "item field name",
                    report,
                )));
            }
            other => type_error(
                report,
                &at,
                "an item: a string, a number, or a map of NAME: value params",
                other,
            ),
        }
    }
    (report.error_count() == errors_before).then_some(out)
}

/// Checks how the call keys combine with the step's other keys, and returns the step's
/// [`Call`] (`None` for a step without `call:`, or when a problem was reported).
///
/// `command` / `script`: whether the step has them. `ignored`: the fields of keys that mean
/// nothing on a call step (warned about).
pub(super) fn finish(
    draft: CallDraft,
    has_command: bool,
    ignored: &[String],
    report: &mut Report,
) -> Option<Call> {
    let Some(call_field) = draft.call_field else {
        if let Some(field) = draft.parallel_field {
            report.error(
                field,
                "parallel runs a DAG once per item and needs call: <dag name> on the same step; \
                 add call:, or remove parallel (to loop in a shell step, loop in its script)",
            );
        }
        if let Some(field) = draft.params_field {
            report.error(
                field,
                "a step's params are the params of the DAG it calls and need call: <dag name>; \
                 add call:, or pass values to a command through env: instead",
            );
        }
        return None;
    };
    if has_command {
        report.error(
            call_field,
            "a step runs either a command or script, or another DAG (call:), not both; move the \
             command to a step of its own, or remove call:",
        );
        return None;
    }
    for field in ignored {
        report.warn(format!(
            "{field}: ignored on a call step (it runs no process; the called DAG's own steps \
             have their own)"
        ));
    }
    Some(Call {
        dag: draft.dag?,
        params: draft.params,
        parallel: draft.parallel,
    })
}

impl super::Dag {
    /// The DAGs this DAG's steps and handlers call by a fixed name (a `call:` without `$`),
    /// as `(field, name)` in step order (`steps[2].call`, `handlerOn.failure.call`): the edges
    /// of the call graph that registration checks for cycles.
    pub fn static_calls(&self) -> Vec<(String, &str)> {
        let steps = (self.steps.iter().enumerate()).map(|(i, step)| (item("steps", i), step));
        let h = &self.handlers;
        let handlers = [
            ("success", &h.success),
            ("failure", &h.failure),
            ("abort", &h.abort),
            ("exit", &h.exit),
        ];
        let handlers = (handlers.into_iter())
            .filter_map(|(kind, step)| Some((child("handlerOn", kind), step.as_ref()?)));
        steps
            .chain(handlers)
            .filter_map(|(at, step)| {
                let dag = step.call.as_ref()?.dag.as_str();
                (!dag.contains('$')).then(|| (child(&at, "call"), dag))
            })
            .collect()
    }
}
