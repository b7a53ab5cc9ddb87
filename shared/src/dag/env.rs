//! Dagu `env` (DAG and step level): a map, a list of maps, or a list of `KEY=value` strings;
//! and the DAG-level `dotenv` and `working_dir`.

use serde_yaml::{Mapping, Value};

use super::names::identifier_problem;
use super::report::{child, item, Report};
use super::value::{describe_key, kind, scalar_text, string, type_error};
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

/// Dagu `dotenv`: a file path or a list of them (`[]`: none), kept as written (`$VAR` and `~`
/// are expanded on the worker).
pub(super) fn dotenv(field: &str, value: &Value, report: &mut Report) -> Vec<String> {
    const EXPECTED: &str = "a file path or a list of file paths";
    match value {
        Value::Null => Vec::new(),
        Value::String(path) => non_empty(field, path, report).into_iter().collect(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Value::String(path) => non_empty(&item(field, index), path, report),
                other => {
                    type_error(report, &item(field, index), "a file path", other);
                    None
                }
            })
            .collect(),
        other => {
            type_error(report, field, EXPECTED, other);
            Vec::new()
        }
    }
}

fn non_empty(field: &str, path: &str, report: &mut Report) -> Option<String> {
    if path.trim().is_empty() {
        report.error(
            field,
            "an empty path; name a file such as .env or remove the entry",
        );
        return None;
    }
    Some(path.trim().to_owned())
}

/// Dagu DAG-level `working_dir`: a directory path. A relative one is relative to each
/// worker's directory (a registered DAG has no file location on the workers; Dagu takes it
/// relative to the DAG file's directory), which gets a warning.
pub(super) fn working_dir(field: &str, value: &Value, report: &mut Report) -> Option<String> {
    let dir = string(report, field, "a directory path", value)?;
    let dir = dir.trim().to_owned();
    if dir.is_empty() {
        report.error(field, "an empty path; name a directory or remove the key");
        return None;
    }
    if !(dir.starts_with('/') || dir.starts_with('~') || dir.starts_with('$')) {
        report.warn(format!(
            "{field}: the relative path {dir:?} is relative to each worker's working directory \
             (Dagu takes it relative to the DAG file's directory); write an absolute path"
        ));
    }
    Some(dir)
}
