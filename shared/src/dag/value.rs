//! Reading typed values out of `serde_yaml::Value`, reporting wrong types at their field path.

use serde_yaml::Value;

use super::report::Report;

/// How a YAML value is named in messages ("found a map").
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Report that `field` holds the wrong YAML type.
pub(super) fn type_error(report: &mut Report, field: &str, expected: &str, found: &Value) {
    let hint = match found {
        Value::Bool(_) | Value::Number(_)
            if expected.contains("string") || expected.contains("name") =>
        {
            "; quote it to make it a string"
        }
        _ => "",
    };
    report.error(
        field,
        format!("expected {expected}, found {}{hint}", kind(found)),
    );
}

/// A string field: `None` for null (absent) or a wrong type (reported).
pub(super) fn string(
    report: &mut Report,
    field: &str,
    expected: &str,
    value: &Value,
) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => {
            type_error(report, field, expected, other);
            None
        }
    }
}

/// A scalar rendered as text, as Dagu does for param defaults and env values: strings as they
/// are, numbers and booleans as their YAML text, null as `""`; `None` for lists, maps and tags.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) => Some(text.clone()),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => None,
    }
}

/// The text of a map key, if it is a string.
pub(super) fn key_text(key: &Value) -> Option<&str> {
    key.as_str()
}

/// A map key that is not a string, rendered for a message (`a number (1)`).
pub(super) fn describe_key(key: &Value) -> String {
    match scalar_text(key) {
        Some(text) if !matches!(key, Value::Null) => format!("{} ({text})", kind(key)),
        _ => kind(key).to_owned(),
    }
}
