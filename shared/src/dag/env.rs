//! Dagu `env` (DAG and step level): a map, a list of maps, or a list of `KEY=value` strings.

use serde_yaml::{Mapping, Value};

use super::names::identifier_problem;
use super::report::{child, item, Report};
use super::value::{describe_key, kind, scalar_text, type_error};
use super::EnvVar;

const EXPECTED: &str = "a map of NAME: value or a list of NAME: value maps or NAME=value strings";

/// Read the `env` value at `field`, in declared order; values are kept as written (not
/// expanded) and scalars are stringified.
pub(super) fn parse_env(value: &Value, field: &str, report: &mut Report) -> Vec<EnvVar> {
    let mut vars = Vec::new();
    match value {
        Value::Null => {}
        Value::Mapping(map) => read_map(map, field, &mut vars, report),
        Value::Sequence(items) => {
            for (index, entry) in items.iter().enumerate() {
                read_item(entry, &item(field, index), &mut vars, report);
            }
        }
        other => type_error(report, field, EXPECTED, other),
    }
    vars
}

/// One list item: a map of one or more `NAME: value` entries, or a `NAME=value` string.
fn read_item(entry: &Value, field: &str, vars: &mut Vec<EnvVar>, report: &mut Report) {
    match entry {
        Value::Mapping(map) => read_map(map, field, vars, report),
        Value::String(text) => match text.split_once('=') {
            Some((name, value)) => push(name, value.to_owned(), field, vars, report),
            None => report.error(
                field,
                format!("\"{text}\" is not NAME=value; write it as NAME=value or NAME: value"),
            ),
        },
        other => type_error(
            report,
            field,
            "a NAME: value map or a NAME=value string",
            other,
        ),
    }
}

/// The entries of a map in file order; the field of each is `<field>.<NAME>`.
fn read_map(map: &Mapping, field: &str, vars: &mut Vec<EnvVar>, report: &mut Report) {
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            let found = describe_key(key);
            report.error(field, format!("env names must be strings, found {found}"));
            continue;
        };
        let entry_field = child(field, name);
        match scalar_text(value) {
            Some(text) => push(name, text, &entry_field, vars, report),
            None => report.error(
                &entry_field,
                format!(
                    "expected a string, number or boolean value, found {}",
                    kind(value)
                ),
            ),
        }
    }
}

fn push(name: &str, value: String, field: &str, vars: &mut Vec<EnvVar>, report: &mut Report) {
    if let Some(problem) = identifier_problem(name, "env name") {
        report.error(field, problem);
        return;
    }
    vars.push(EnvVar {
        name: name.to_owned(),
        value,
    });
}
