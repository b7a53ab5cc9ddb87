//! Dagu `params`: declaring them (string, list or map form) and binding a caller's values.

use std::collections::{BTreeMap, HashSet};

use serde_yaml::{Mapping, Value};

use super::names::{identifier_problem, is_identifier, suggest};
use super::report::{child, item, Report};
use super::value::{describe_key, kind, scalar_text, type_error};
use super::{BoundParam, DagError, DagErrors, ParamDef};

const EXPECTED: &str = "a string of params (\"a NAME=b\"), a list of NAME: default maps, \
                        NAME=value strings or positional values, or a map of NAME: default";

/// Read the top-level `params` value (field `params`), in declared order.
///
/// - string: split like a shell command line; a token `NAME=value` with NAME an identifier is a
///   named param with that default, any other token is positional with that default;
/// - list: items are single-entry `NAME: default` maps, `NAME=value` strings (named as above) or
///   any other scalar (positional, not split);
/// - map: `NAME: default` entries.
pub(super) fn parse_params(value: &Value, report: &mut Report) -> Vec<ParamDef> {
    const FIELD: &str = "params";
    let mut params = Vec::new();
    match value {
        Value::Null => {}
        Value::String(line) => match shell_words::split(line) {
            Ok(tokens) => params.extend(tokens.iter().map(|token| from_token(token))),
            Err(err) => report.error(
                FIELD,
                format!("cannot split {line:?} into params ({err}); balance the quotes"),
            ),
        },
        Value::Sequence(items) => {
            for (index, entry) in items.iter().enumerate() {
                read_item(entry, &item(FIELD, index), &mut params, report);
            }
        }
        Value::Mapping(map) => read_map(map, FIELD, &mut params, report),
        other => type_error(report, FIELD, EXPECTED, other),
    }
    report_duplicates(&params, report);
    params
}

/// A token `NAME=value` (NAME an identifier) is named; anything else is positional.
fn from_token(token: &str) -> ParamDef {
    match token.split_once('=') {
        Some((name, default)) if is_identifier(name) => ParamDef {
            name: Some(name.to_owned()),
            default: default.to_owned(),
        },
        _ => ParamDef {
            name: None,
            default: token.to_owned(),
        },
    }
}

fn read_item(entry: &Value, field: &str, params: &mut Vec<ParamDef>, report: &mut Report) {
    match entry {
        Value::Mapping(map) if map.len() == 1 => read_map(map, field, params, report),
        Value::Mapping(map) => report.error(field, several_entries_message(map)),
        Value::String(token) => params.push(from_token(token)),
        other => match scalar_text(other) {
            Some(default) => params.push(ParamDef {
                name: None,
                default,
            }),
            None => type_error(report, field, "a NAME: default map or a value", other),
        },
    }
}

fn several_entries_message(map: &Mapping) -> String {
    let typed = map.contains_key("name") && map.contains_key("default");
    let hint = if typed {
        "; Dagu's typed param objects (name:, default:, …) are not supported yet, write - NAME: default"
    } else {
        "; write one NAME: default per list item"
    };
    format!(
        "a params list item must hold exactly one NAME: default entry, found {} entries{hint}",
        map.len()
    )
}

/// `NAME: default` entries in file order; the field of each is `<field>.<NAME>`.
fn read_map(map: &Mapping, field: &str, params: &mut Vec<ParamDef>, report: &mut Report) {
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            let found = describe_key(key);
            report.error(field, format!("param names must be strings, found {found}"));
            continue;
        };
        let entry_field = child(field, name);
        if let Some(problem) = identifier_problem(name, "param name") {
            report.error(&entry_field, problem);
            continue;
        }
        match scalar_text(value) {
            Some(default) => params.push(ParamDef {
                name: Some(name.to_owned()),
                default,
            }),
            None => report.error(
                &entry_field,
                format!(
                    "expected a string, number or boolean default, found {}",
                    kind(value)
                ),
            ),
        }
    }
}

fn report_duplicates(params: &[ParamDef], report: &mut Report) {
    let mut seen = HashSet::new();
    for name in params.iter().filter_map(|param| param.name.as_deref()) {
        if !seen.insert(name) {
            report.error(
                child("params", name),
                format!("param \"{name}\" is declared twice; keep one"),
            );
        }
    }
}

/// Bind `given` (declared name or 1-based position → value) onto `declared`; see
/// [`super::Dag::bind_params`].
pub(super) fn bind(
    declared: &[ParamDef],
    given: &BTreeMap<String, String>,
) -> Result<Vec<BoundParam>, DagErrors> {
    let mut chosen: Vec<Option<&str>> = vec![None; declared.len()];
    let mut values: Vec<Option<&str>> = vec![None; declared.len()];
    let mut errors = Vec::new();
    for (key, value) in given {
        let Some(index) = resolve(declared, key) else {
            errors.push(DagError::new(
                child("params", key),
                unknown_message(declared, key),
            ));
            continue;
        };
        if let Some(first) = chosen[index] {
            errors.push(DagError::new(
                child("params", key),
                format!(
                    "param {} is given twice, as \"{first}\" and as \"{key}\"; give it once",
                    describe(declared, index)
                ),
            ));
            continue;
        }
        if let Some(problem) = super::guard::param_value_problem(value) {
            errors.push(DagError::new(
                child("params", key),
                format!("the value {problem}"),
            ));
            continue;
        }
        chosen[index] = Some(key);
        values[index] = Some(value);
    }
    if !errors.is_empty() {
        return Err(DagErrors(errors));
    }
    let bound: Vec<BoundParam> = declared
        .iter()
        .zip(values)
        .map(|(param, value)| BoundParam {
            name: param.name.clone(),
            value: value.unwrap_or(&param.default).to_owned(),
        })
        .collect();
    if let Some(problem) =
        super::guard::params_total_problem(bound.iter().map(|p| p.value.as_str()))
    {
        return Err(DagError::new("params", problem).into());
    }
    Ok(bound)
}

/// The declared param `key` addresses: a declared name, or a 1-based position written in
/// plain decimal (`"1"`, not `"01"` or `"+1"`).
fn resolve(declared: &[ParamDef], key: &str) -> Option<usize> {
    if let Some(index) = declared
        .iter()
        .position(|param| param.name.as_deref() == Some(key))
    {
        return Some(index);
    }
    if key.is_empty() || key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let position: usize = key.parse().ok()?;
    (position <= declared.len()).then(|| position - 1)
}

/// How a declared param is named in messages: `"FILE" (position 1)` or `at position 2`.
fn describe(declared: &[ParamDef], index: usize) -> String {
    let position = index + 1;
    match declared.get(index).and_then(|param| param.name.as_deref()) {
        Some(name) => format!("\"{name}\" (position {position})"),
        None => format!("at position {position}"),
    }
}

fn unknown_message(declared: &[ParamDef], key: &str) -> String {
    if declared.is_empty() {
        let example = if is_identifier(key) {
            format!("params: {key}=default")
        } else {
            "params: \"value\"".to_owned()
        };
        return format!(
            "\"{key}\" is not a declared param: this DAG declares no params; declare them in \
             the DAG file with a params: key (e.g. {example})"
        );
    }
    let valid: Vec<String> = declared
        .iter()
        .enumerate()
        .map(|(index, param)| match &param.name {
            Some(name) => format!("{name} or {}", index + 1),
            None => (index + 1).to_string(),
        })
        .collect();
    let names = declared.iter().filter_map(|param| param.name.as_deref());
    let hint = suggest(key, names)
        .map(|near| format!("did you mean \"{near}\"? "))
        .unwrap_or_default();
    format!(
        "\"{key}\" is not a declared param name or position; {hint}valid keys: {}",
        valid.join(", ")
    )
}
