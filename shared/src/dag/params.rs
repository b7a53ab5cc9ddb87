//! Dagu `params`: declaring them (string, list or map form, typed entries) and binding a
//! caller's values.
//!
//! As in Dagu ≥ 2.3 (`internal/core/spec/params.go`, `dparams*.go`), param values are literal:
//! no `${VAR}` expansion and no backtick command runs in a param's default or a caller's
//! value. A value computed at run time is a typed entry's `eval` (see [`TypedParam::eval`]);
//! a plain default holding a backtick or `${` gets a warning saying so.

use std::collections::{BTreeMap, HashSet};

use serde_yaml::{Mapping, Value};

use super::names::{identifier_problem, is_identifier, suggest};
use super::report::{child, item, Report};
use super::value::{describe_key, kind, scalar_text, type_error};
use super::{BoundParam, DagError, DagErrors, ParamDef, ParamType, TypedParam};

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
        Value::Mapping(map) if is_schema(map) => report.error(
            FIELD,
            super::yaml_keys::not_supported_yet(
                "JSON-schema params (`schema:`/`values:`, or `type: object` with `properties:`)",
                "declare typed entries instead: - name: X with type:, default:, enum:, \
                 required:, …",
            ),
        ),
        Value::Mapping(map) => read_map(map, FIELD, &mut params, report),
        other => type_error(report, FIELD, EXPECTED, other),
    }
    report_duplicates(&params, report);
    warn_literal_defaults(&params, report);
    params
}

/// A scheduled run binds the defaults only: a `required` typed param without a default or an
/// `eval` makes every slot fail to bind (the scheduler skips it), so say so.
pub(super) fn warn_unschedulable(params: &[ParamDef], report: &mut Report) {
    for param in params {
        let Some(t) = param.typed.as_deref() else {
            continue;
        };
        if t.required && !t.has_default && t.eval.is_none() {
            let name = param.name.as_deref().unwrap_or_default();
            report.warn(format!(
                "params.{name}: required with no default, so the runs of `schedule` cannot \
                 bind it and every slot is skipped; give it a default"
            ));
        }
    }
}

/// Dagu ≥ 2.3 keeps a param's default literal (dagucloud/dagu#1767): a backtick command or a
/// `${VAR}` in it is not evaluated. Files written for older Dagu relied on it, so say so.
fn warn_literal_defaults(params: &[ParamDef], report: &mut Report) {
    for (index, param) in params.iter().enumerate() {
        if param.typed.is_some() || !(param.default.contains('`') || param.default.contains("${")) {
            continue;
        }
        let field = match &param.name {
            Some(name) => child("params", name),
            None => item("params", index),
        };
        let name = param.name.as_deref().unwrap_or("NAME");
        report.warn(format!(
            "{field}: the default {:?} is used literally (as in Dagu 2.3 and later: no backtick \
             command or ${{VAR}} is evaluated in a param); to compute it when the run starts, \
             write `- name: {name}` with `eval: {:?}`",
            param.default, param.default
        ));
    }
}

/// Dagu's schema forms of `params` (`dparams_external_schema.go`, `dparams_inline_schema.go`).
fn is_schema(map: &Mapping) -> bool {
    map.contains_key("schema")
        || (map.get("type").and_then(Value::as_str) == Some("object")
            && map.contains_key("properties"))
}

/// A token `NAME=value` (NAME an identifier) is named; anything else is positional.
fn from_token(token: &str) -> ParamDef {
    match token.split_once('=') {
        Some((name, default)) if is_identifier(name) => {
            plain(Some(name.to_owned()), default.to_owned())
        }
        _ => plain(None, token.to_owned()),
    }
}

fn plain(name: Option<String>, default: String) -> ParamDef {
    ParamDef {
        name,
        default,
        typed: None,
    }
}

/// One list item: a typed entry (a map with `name`), a map of one or more `NAME: default`
/// entries (several are taken in name order, as Dagu iterates them sorted), a `NAME=value`
/// string or a positional value.
fn read_item(entry: &Value, field: &str, params: &mut Vec<ParamDef>, report: &mut Report) {
    match entry {
        Value::Mapping(map) if map.contains_key("name") => {
            if let Some(param) = read_typed(map, field, report) {
                params.push(param);
            }
        }
        Value::Mapping(map) => {
            if let Some((key, _)) = map.iter().find(|(_, v)| matches!(v, Value::Mapping(_))) {
                let name = key.as_str().unwrap_or("NAME");
                report.error(
                    child(field, name),
                    format!(
                        "a typed param is written as an object with a name: rewrite `- {name}: \
                         {{ ... }}` as `- name: {name}` with the fields (type:, default:, enum:, \
                         …) on the same object"
                    ),
                );
                return;
            }
            let mut sorted: Vec<(&Value, &Value)> = map.iter().collect();
            sorted.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
            let sorted: Mapping = sorted
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            read_map(&sorted, field, params, report);
        }
        Value::String(token) => params.push(from_token(token)),
        other => match scalar_text(other) {
            Some(default) => params.push(plain(None, default)),
            None => type_error(report, field, "a NAME: default map or a value", other),
        },
    }
}

/// The keys a typed entry may have besides `name` (Dagu's `parseInlineParamDefinition`).
const TYPED_KEYS: &[&str] = &[
    "default",
    "eval",
    "description",
    "type",
    "required",
    "enum",
    "minimum",
    "maximum",
    "min_length",
    "max_length",
    "pattern",
];

/// A typed entry (`- name: X` with its fields); `None` when it has a problem (reported).
fn read_typed(map: &Mapping, field: &str, report: &mut Report) -> Option<ParamDef> {
    let Some(Value::String(raw_name)) = map.get("name") else {
        report.error(
            child(field, "name"),
            "a typed param's name must be a string (e.g. name: TARGET)",
        );
        return None;
    };
    let name = raw_name.trim().to_owned();
    if let Some(problem) = identifier_problem(&name, "param name") {
        report.error(child(field, "name"), problem);
        return None;
    }
    let at = child("params", &name);
    if map.len() == 1 {
        report.error(
            &at,
            format!(
                "param \"{name}\" needs at least one field besides name (default:, type:, \
                 enum:, required:, description:, eval:, …); for a plain param write `- {name}: \
                 default`"
            ),
        );
        return None;
    }
    let errors_before = report_errors(report);
    let mut t = TypedParam::default();
    let mut default: Option<&Value> = None;
    let mut choices: Option<&Value> = None;
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            report.error(
                &at,
                format!("field names must be strings, found {}", describe_key(key)),
            );
            continue;
        };
        let f = child(&at, key);
        match key {
            "name" => {}
            "default" => default = Some(value),
            "enum" => choices = Some(value),
            "type" => match value.as_str().map(str::trim) {
                Some("" | "string") => t.kind = ParamType::String,
                Some("integer") => t.kind = ParamType::Integer,
                Some("number") => t.kind = ParamType::Number,
                Some("boolean") => t.kind = ParamType::Boolean,
                _ => report.error(
                    f,
                    format!(
                        "unsupported type {}; use string, integer, number or boolean",
                        shown(value)
                    ),
                ),
            },
            "description" => match value {
                Value::String(text) => t.description = Some(text.clone()),
                other => type_error(report, &f, "a string", other),
            },
            "eval" => match value.as_str().map(str::trim) {
                Some(text) if !text.is_empty() => t.eval = Some(text.to_owned()),
                _ => report.error(
                    f,
                    "eval must be a non-empty string (e.g. eval: \"`date +%F`\")",
                ),
            },
            "required" => match value {
                Value::Bool(flag) => t.required = *flag,
                other => type_error(report, &f, "true or false", other),
            },
            "minimum" | "maximum" => match value {
                Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                    let text = Some(n.to_string());
                    if key == "minimum" {
                        t.minimum = text;
                    } else {
                        t.maximum = text;
                    }
                }
                other => type_error(report, &f, "a number", other),
            },
            "min_length" | "max_length" => match value.as_u64() {
                Some(n) => {
                    if key == "min_length" {
                        t.min_length = Some(n);
                    } else {
                        t.max_length = Some(n);
                    }
                }
                None => type_error(report, &f, "a whole number ≥ 0", value),
            },
            "pattern" => match value {
                Value::String(re) => match regex::Regex::new(re) {
                    Ok(_) => t.pattern = Some(re.clone()),
                    Err(e) => report.error(f, format!("the pattern does not compile: {e}")),
                },
                other => type_error(report, &f, "a regular expression string", other),
            },
            "minLength" | "maxLength" => report.error(
                f,
                format!(
                    "write it {}",
                    if key == "minLength" {
                        "min_length"
                    } else {
                        "max_length"
                    }
                ),
            ),
            other => {
                let hint = suggest(other, TYPED_KEYS.iter().copied())
                    .map(|near| format!("did you mean \"{near}\"? "))
                    .unwrap_or_default();
                report.error(
                    f,
                    format!(
                        "unknown field of a typed param; {hint}valid fields: name, {}",
                        TYPED_KEYS.join(", ")
                    ),
                );
            }
        }
    }
    let numeric = matches!(t.kind, ParamType::Integer | ParamType::Number);
    if !numeric && (t.minimum.is_some() || t.maximum.is_some()) {
        report.error(
            &at,
            format!(
                "minimum/maximum need type: integer or number (the type is {})",
                type_name(t.kind)
            ),
        );
    }
    if t.kind != ParamType::String
        && (t.min_length.is_some() || t.max_length.is_some() || t.pattern.is_some())
    {
        report.error(
            &at,
            format!(
                "min_length/max_length/pattern need type: string (the type is {})",
                type_name(t.kind)
            ),
        );
    }
    if let (Some(lo), Some(hi)) = (number(&t.minimum), number(&t.maximum)) {
        if lo > hi {
            report.error(&at, "minimum must be less than or equal to maximum");
        }
    }
    if let (Some(lo), Some(hi)) = (t.min_length, t.max_length) {
        if lo > hi {
            report.error(&at, "min_length must be less than or equal to max_length");
        }
    }
    if let Some(list) = choices {
        match list {
            Value::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    match yaml_value(v, t.kind) {
                        Ok(text) => t.choices.push(text),
                        Err(why) => report.error(item(&child(&at, "enum"), i), why),
                    }
                }
            }
            other => type_error(report, &child(&at, "enum"), "a list of values", other),
        }
    }
    let mut default_text = String::new();
    if let Some(value) = default {
        match yaml_value(value, t.kind) {
            Ok(text) => {
                t.has_default = true;
                default_text = text;
            }
            Err(why) => report.error(child(&at, "default"), why),
        }
    }
    if report_errors(report) != errors_before {
        return None;
    }
    if t.has_default {
        if let Err(why) = t.check(&default_text) {
            report.error(child(&at, "default"), format!("the default {why}"));
            return None;
        }
    }
    Some(ParamDef {
        name: Some(name),
        default: default_text,
        typed: Some(Box::new(t)),
    })
}

/// How many problems `report` holds so far (to tell whether reading an entry added one).
fn report_errors(report: &Report) -> usize {
    report.error_count()
}

fn shown(value: &Value) -> String {
    match scalar_text(value) {
        Some(text) if !matches!(value, Value::Null) => format!("{text:?}"),
        _ => kind(value).to_owned(),
    }
}

fn type_name(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "string",
        ParamType::Integer => "integer",
        ParamType::Number => "number",
        ParamType::Boolean => "boolean",
    }
}

fn number(text: &Option<String>) -> Option<f64> {
    text.as_deref().and_then(|t| t.parse().ok())
}

/// A YAML default or enum value as the text of its type (Dagu's `normalizeTypedParamValue`):
/// strings are coerced like a caller's value, numbers and booleans must fit the type.
fn yaml_value(value: &Value, kind: ParamType) -> Result<String, String> {
    match (kind, value) {
        (_, Value::String(text)) => normalize(kind, text),
        (ParamType::String, other) => scalar_text(other)
            .ok_or_else(|| format!("expected a value, found {}", super::value::kind(other))),
        (ParamType::Integer | ParamType::Number, Value::Number(n)) => {
            normalize(kind, &n.to_string())
        }
        (ParamType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (_, other) => Err(format!(
            "expected {}, found {}",
            article(kind),
            super::value::kind(other)
        )),
    }
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean (true or false)",
    }
}

/// `text` as a value of `kind`, in its normal form (Dagu's `coerceStringToType`).
fn normalize(kind: ParamType, text: &str) -> Result<String, String> {
    match kind {
        ParamType::String => Ok(text.to_owned()),
        ParamType::Integer => text
            .trim()
            .parse::<i64>()
            .map(|n| n.to_string())
            .map_err(|_| format!("{text:?} is not an integer (give a whole number such as 42)")),
        ParamType::Number => match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(format_number(n)),
            _ => Err(format!("{text:?} is not a number (give one such as 1.5)")),
        },
        ParamType::Boolean => {
            if text.eq_ignore_ascii_case("true") {
                Ok("true".into())
            } else if text.eq_ignore_ascii_case("false") {
                Ok("false".into())
            } else {
                Err(format!("{text:?} is not a boolean (give true or false)"))
            }
        }
    }
}

/// A number as JSON writes it (Dagu stringifies typed values with `json.Marshal`): `1.0` is
/// `1`, `1.50` is `1.5`.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl TypedParam {
    /// `value` checked against this entry's type, `enum`, `minimum`/`maximum`,
    /// `min_length`/`max_length` and `pattern`, in its normal form (`" 42 "` → `42`).
    ///
    /// # Errors
    /// What is wrong, as a phrase that follows "the value" or a param's name (`"abc" is not
    /// an integer (…)`, `"x" is not one of: a, b`).
    pub fn check(&self, value: &str) -> Result<String, String> {
        let normal = normalize(self.kind, value)?;
        if !self.choices.is_empty() && !self.choices.contains(&normal) {
            return Err(format!(
                "{normal:?} is not one of the allowed values: {}",
                self.choices.join(", ")
            ));
        }
        if let Ok(n) = normal.parse::<f64>() {
            if let Some(lo) = number(&self.minimum).filter(|lo| n < *lo) {
                return Err(format!("{normal} is below the minimum {lo}"));
            }
            if let Some(hi) = number(&self.maximum).filter(|hi| n > *hi) {
                return Err(format!("{normal} is above the maximum {hi}"));
            }
        }
        let chars = normal.chars().count() as u64;
        if let Some(lo) = self.min_length.filter(|lo| chars < *lo) {
            return Err(format!("{normal:?} is shorter than min_length {lo}"));
        }
        if let Some(hi) = self.max_length.filter(|hi| chars > *hi) {
            return Err(format!("{normal:?} is longer than max_length {hi}"));
        }
        if let Some(re) = &self.pattern {
            let matched = regex::Regex::new(re).map(|r| r.is_match(&normal));
            if matched != Ok(true) {
                return Err(format!("{normal:?} does not match the pattern {re:?}"));
            }
        }
        Ok(normal)
    }
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
            Some(default) => params.push(plain(Some(name.to_owned()), default)),
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
    let named_declared = declared.iter().any(|p| p.name.is_some());
    let typed_declared = declared.iter().any(|p| p.typed.is_some());
    let mut chosen: Vec<Option<&str>> = vec![None; declared.len()];
    let mut values: Vec<Option<&str>> = vec![None; declared.len()];
    let mut extra_positions: BTreeMap<usize, &str> = BTreeMap::new();
    let mut extra_names: Vec<(&str, &str)> = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in given {
        if let Some(problem) = super::guard::param_value_problem(value) {
            errors.push(DagError::new(
                child("params", key),
                format!("the value {problem}"),
            ));
            continue;
        }
        let Some(index) = resolve(declared, key) else {
            // Dagu's legacy binding: a position past the declared ones, or (when the DAG
            // declares no named param) any name, is an extra param appended after them.
            match position(key) {
                Some(p) if !typed_declared => {
                    extra_positions.insert(p, value);
                }
                None if !named_declared && is_identifier(key) => extra_names.push((key, value)),
                _ => errors.push(DagError::new(
                    child("params", key),
                    unknown_message(declared, key),
                )),
            }
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
        chosen[index] = Some(key);
        values[index] = Some(value);
    }
    for (offset, (&p, _)) in extra_positions.iter().enumerate() {
        let expected = declared.len() + offset + 1;
        if p != expected {
            errors.push(DagError::new(
                child("params", &p.to_string()),
                format!(
                    "position {p} is given without position {expected}; positional params are \
                     given in order, so give {expected} too (the DAG declares {} params)",
                    declared.len()
                ),
            ));
            break;
        }
    }
    let mut bound = Vec::with_capacity(declared.len() + extra_positions.len() + extra_names.len());
    for (index, (param, value)) in declared.iter().zip(values).enumerate() {
        let Some(typed) = param.typed.as_deref() else {
            bound.push(BoundParam {
                name: param.name.clone(),
                value: value.unwrap_or(&param.default).to_owned(),
            });
            continue;
        };
        let name = param.name.as_deref().unwrap_or_default();
        let field = child("params", chosen[index].unwrap_or(name));
        match value {
            Some(value) => match typed.check(value) {
                Ok(normal) => bound.push(BoundParam {
                    name: param.name.clone(),
                    value: normal,
                }),
                Err(why) => errors.push(DagError::new(
                    field,
                    format!(
                        "{why}; param {name} has type: {}{}",
                        type_name(typed.kind),
                        accepts(typed)
                    ),
                )),
            },
            // Computed by the worker of the run's first task (TypedParam::eval), which falls
            // back to the default when the command fails; so `eval` comes before `default`.
            None if typed.eval.is_some() => {}
            None if typed.has_default => bound.push(BoundParam {
                name: param.name.clone(),
                value: param.default.clone(),
            }),
            None if typed.required => errors.push(DagError::new(
                field,
                format!(
                    "param {name} is required and has no default; give it (dagrid submit \
                     --param {name}=<value>, or \"params\": {{\"{name}\": \"<value>\"}} in the \
                     API){}",
                    accepts(typed)
                ),
            )),
            // Dagu leaves a typed param without a value unset.
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(DagErrors(errors));
    }
    bound.extend(extra_positions.into_values().map(|value| BoundParam {
        name: None,
        value: value.to_owned(),
    }));
    bound.extend(extra_names.into_iter().map(|(name, value)| BoundParam {
        name: Some(name.to_owned()),
        value: value.to_owned(),
    }));
    if let Some(problem) =
        super::guard::params_total_problem(bound.iter().map(|p| p.value.as_str()))
    {
        return Err(DagError::new("params", problem).into());
    }
    Ok(bound)
}

/// What a typed param accepts, for messages: `; one of: a, b` when it has an `enum`.
fn accepts(typed: &TypedParam) -> String {
    if typed.choices.is_empty() {
        String::new()
    } else {
        format!("; one of: {}", typed.choices.join(", "))
    }
}

/// A 1-based position written in plain decimal (`"1"`, not `"01"` or `"+1"`).
fn position(key: &str) -> Option<usize> {
    if key.is_empty() || key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
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
    let position = position(key)?;
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
    if !declared.iter().any(|p| p.name.is_some()) && position(key).is_none() {
        return format!(
            "\"{key}\" is not a valid param name; use letters, digits and _ and start with a \
             letter or _ (e.g. TARGET=x)"
        );
    }
    if declared.iter().any(|p| p.typed.is_some()) && position(key).is_some() {
        return format!(
            "position {key} is past the DAG's {} params; a DAG with typed params takes no extra \
             positional params",
            declared.len()
        );
    }
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
