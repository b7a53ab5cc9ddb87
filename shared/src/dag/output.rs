//! The map form of a step's `output`, as Dagu 2.0 to 2.6.1 read it (`spec/step.go`
//! `parseOutputConfig`): `{name, key, omit, schema}`. `name` is the variable, as in the string
//! form; `key` and `omit` only shape Dagu's per-run `outputs.json` (the name of the value
//! there, or leaving it out), which dagrid does not keep, so they are accepted with a warning;
//! `schema` (the value must validate against a JSON schema, else the step fails) is refused.
//!
//! Dagu 2.6.2 replaced that form by structured outputs, a map of entries
//! (`{KEY: value | {from, path, decode, select}}`) read as `${id.output.KEY}`; a map that is not
//! the older form is that one, and is refused with the advice to capture stdout instead.

use serde_yaml::{Mapping, Value};

use super::report::Report;
use super::value::{string, type_error};
use super::yaml_keys::{not_supported_yet, OutputKey, OUTPUT};

/// The keys of the older map form; a map with `name` and only these is that form.
const OLDER_FORM: [&str; 4] = ["name", "key", "omit", "schema"];

/// The variable name an `output` map at `field` gives (not yet checked as an identifier), or
/// `None` after reporting why it gives none.
pub(super) fn map_name(field: &str, map: &Mapping, report: &mut Report) -> Option<String> {
    let older = map.get("name").is_some()
        && map
            .keys()
            .all(|key| key.as_str().is_some_and(|key| OLDER_FORM.contains(&key)));
    if !older {
        report.error(
            field,
            not_supported_yet(
                "output as a map of entries",
                "structured step outputs read as ${id.output.KEY} are not run yet; capture \
                 stdout with output: NAME (or output: {name: NAME}) and read ${NAME}",
            ),
        );
        return None;
    }
    let mut name = None;
    for entry in OUTPUT.entries(map, field, report) {
        match entry.key {
            OutputKey::Name => {
                name = string(report, &entry.field, "a variable name", entry.value);
            }
            OutputKey::Key => {
                if string(report, &entry.field, "a key string", entry.value).is_some() {
                    report.warn(format!(
                        "{}: ignored by dagrid (it names the value in Dagu's outputs.json, \
                         which dagrid does not keep; the run shows it under the variable name)",
                        entry.field
                    ));
                }
            }
            OutputKey::Omit => match entry.value {
                Value::Bool(true) => report.warn(format!(
                    "{}: ignored by dagrid (it leaves the value out of Dagu's outputs.json, \
                     which dagrid does not keep; the run's step state still shows the value)",
                    entry.field
                )),
                Value::Bool(false) | Value::Null => {}
                other => type_error(report, &entry.field, "true or false", other),
            },
        }
    }
    let name = name?;
    if name.trim().trim_start_matches('$').is_empty() {
        report.error(
            format!("{field}.name"),
            "is empty; the map form of output needs name: (the variable that captures stdout)",
        );
        return None;
    }
    Some(name)
}
