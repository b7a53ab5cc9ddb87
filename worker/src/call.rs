//! A call step on the worker (Dagu `call:` / `run:`, with `params:` and `parallel:`): no
//! process runs; the worker expands the child DAG's name and the child runs' params against
//! the step's environment ([`crate::env::step_env`], with [`crate::vars::expand`], as a
//! command's words are) and answers a [`CallPlan`], which a coordinator turns into child runs
//! (docs/architecture.md, "Sub-DAGs").
//!
//! With `parallel`, the items are split as Dagu's `stringutil.ParseSeparatedValues` does
//! ([`split_items`]); each item is `ITEM` while the params are expanded, and an item holding a
//! JSON object also gives `${ITEM.key}` (a dotted path: `${ITEM.a.b}`) for its fields.

use dagrid_shared::dag::{
    name_problem, Call, CallPlan, ParallelItem, ParallelItems, MAX_PARALLEL_ITEMS,
    MAX_PARAMS_BYTES, MAX_PARAM_VALUE_BYTES, NAME_RULE,
};
use serde_json::{Map, Value};

use crate::vars;

/// The most bytes of param names and values one call step's child runs may hold together
/// (64 MiB): the [`CallPlan`] travels as one entry of the results stream.
pub(crate) const MAX_CALL_PLAN_BYTES: usize = 64 * 1024 * 1024;

/// What a template's variables resolve to: the step's environment.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The child runs of call step `call`, expanded against `lookup` (the step's environment).
///
/// * No `parallel`: one child with `params` expanded (names kept; `None`: positional).
/// * `parallel`: one child per item, in item order (duplicates kept: the coordinator
///   deduplicates). With `params`, each template is expanded with `ITEM` (and `${ITEM.key}`)
///   set; without, an object item gives named params from its fields (values as text: a
///   string as it is, anything else as its JSON), a scalar item one positional param.
///
/// # Errors
/// The message of the step's `Failed` report: no items or more than [`MAX_PARALLEL_ITEMS`], a
/// child DAG name that is not a valid DAG name ([`name_problem`]) or differs between items,
/// a param value over [`MAX_PARAM_VALUE_BYTES`], a child's values over [`MAX_PARAMS_BYTES`]
/// together, all children's params over [`MAX_CALL_PLAN_BYTES`] together.
pub(crate) fn plan(call: &Call, lookup: Lookup<'_>) -> Result<CallPlan, String> {
    let Some(parallel) = &call.parallel else {
        let dag = child_dag(&call.dag, vars::expand(&call.dag, lookup))?;
        let params = expand_params(&call.params, None, lookup);
        check_values(&params, None)?;
        return Ok(CallPlan {
            dag,
            children: vec![params],
            parallel: None,
        });
    };
    let items = items_of(&parallel.items, lookup)?;
    if items.len() > MAX_PARALLEL_ITEMS {
        return Err(format!(
            "parallel: {} items; a parallel step starts at most {MAX_PARALLEL_ITEMS} child runs: \
             split the items over several steps or DAGs",
            items.len()
        ));
    }
    // Dagu expands the name per item too (with ITEM set); one step runs one DAG here.
    let mut dag: Option<String> = None;
    let mut children = Vec::with_capacity(items.len());
    let mut total = 0;
    for (index, item) in items.iter().enumerate() {
        if dag.is_none() || call.dag.contains("ITEM") {
            let name = expand_with_item(&call.dag, item, lookup);
            match &dag {
                None => dag = Some(child_dag(&call.dag, name)?),
                Some(first) if *first != name => {
                    return Err(format!(
                        "call: \"{}\" names DAG \"{first}\" for item 1 but \"{name}\" for item {}; \
                         a parallel step runs one DAG for all its items: move the choice of \
                         DAG into the child's params",
                        call.dag,
                        index + 1
                    ))
                }
                Some(_) => {}
            }
        }
        let params = if call.params.is_empty() {
            match &item.fields {
                Some(fields) => fields
                    .iter()
                    .map(|(k, v)| (Some(k.clone()), text_of(v)))
                    .collect(),
                None => vec![(None, item.text.clone())],
            }
        } else {
            expand_params(&call.params, Some(item), lookup)
        };
        check_values(&params, Some(index))?;
        total += params
            .iter()
            .map(|(k, v)| k.as_ref().map_or(0, String::len) + v.len())
            .sum::<usize>();
        if total > MAX_CALL_PLAN_BYTES {
            return Err(format!(
                "parallel: the child runs' params pass {MAX_CALL_PLAN_BYTES} bytes (64 MiB) \
                 together at item {} of {}: pass paths or keys instead of data, or split the \
                 items over several steps",
                index + 1,
                items.len()
            ));
        }
        children.push(params);
    }
    Ok(CallPlan {
        dag: dag.unwrap_or_default(),
        children,
        parallel: Some(parallel.max_concurrent),
    })
}

/// One `parallel` item: its text (`ITEM`) and, when that text is a JSON object, its fields.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    text: String,
    fields: Option<Map<String, Value>>,
}

impl Item {
    fn new(text: String) -> Self {
        let fields = match text.trim_start().starts_with('{') {
            true => match serde_json::from_str(&text) {
                Ok(Value::Object(fields)) => Some(fields),
                _ => None,
            },
            false => None,
        };
        Self { text, fields }
    }
}

/// The items of `items`, expanded: a written scalar is its expanded text; a written map has
/// its values expanded and is `ITEM` as a JSON object; a variable is expanded and split by
/// [`split_items`].
///
/// # Errors
/// No items at all.
fn items_of(items: &ParallelItems, lookup: Lookup<'_>) -> Result<Vec<Item>, String> {
    let out: Vec<Item> = match items {
        ParallelItems::List(list) => list
            .iter()
            .map(|item| match item {
                ParallelItem::Value(template) => Item::new(vars::expand(template, lookup)),
                ParallelItem::Params(entries) => {
                    let fields: Map<String, Value> = entries
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(vars::expand(v, lookup))))
                        .collect();
                    Item {
                        text: Value::Object(fields.clone()).to_string(),
                        fields: Some(fields),
                    }
                }
            })
            .collect(),
        ParallelItems::Variable(template) => {
            let value = vars::expand(template, lookup);
            let texts = split_items(&value);
            if texts.is_empty() {
                return Err(format!(
                    "parallel: {template} expanded to no items; it must hold a JSON array, or \
                     items separated by lines, commas, semicolons, pipes, tabs or spaces (got \
                     {:?})",
                    shorten(&value)
                ));
            }
            texts.into_iter().map(Item::new).collect()
        }
    };
    if out.is_empty() {
        return Err(
            "parallel: the step lists no items; give `items` at least one item".to_string(),
        );
    }
    Ok(out)
}

/// At most 80 chars of `s`, for messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// `name` (expanded from `template`) when it is a valid DAG name.
fn child_dag(template: &str, name: String) -> Result<String, String> {
    match name_problem(&name) {
        None => Ok(name),
        Some(why) => Err(format!(
            "call: the child DAG's name \"{name}\" (from \"{template}\") is not valid: it {why}; \
             {NAME_RULE}"
        )),
    }
}

/// Each param's value template expanded, with `item` as `ITEM` when given.
fn expand_params(
    params: &[(Option<String>, String)],
    item: Option<&Item>,
    lookup: Lookup<'_>,
) -> Vec<(Option<String>, String)> {
    params
        .iter()
        .map(|(name, template)| {
            let value = match item {
                Some(item) => expand_with_item(template, item, lookup),
                None => vars::expand(template, lookup),
            };
            (name.clone(), value)
        })
        .collect()
}

/// Every value at most [`MAX_PARAM_VALUE_BYTES`].
fn check_values(params: &[(Option<String>, String)], item: Option<usize>) -> Result<(), String> {
    for (position, (name, value)) in params.iter().enumerate() {
        if value.len() > MAX_PARAM_VALUE_BYTES {
            let which = match name {
                Some(name) => format!("param {name}"),
                None => format!("positional param {}", position + 1),
            };
            let child = match item {
                Some(i) => format!(" of the child run for item {}", i + 1),
                None => String::new(),
            };
            return Err(format!(
                "call: {which}{child} is {} bytes; a param value is at most \
                 {MAX_PARAM_VALUE_BYTES} bytes (32 KiB): pass a file path or a key instead of \
                 the data",
                value.len()
            ));
        }
    }
    let total: usize = params.iter().map(|(_, v)| v.len()).sum();
    if total > MAX_PARAMS_BYTES {
        let child = match item {
            Some(i) => format!(" of the child run for item {}", i + 1),
            None => String::new(),
        };
        return Err(format!(
            "call: the param values{child} add up to {total} bytes; a run's params are at most \
             {MAX_PARAMS_BYTES} bytes (64 KiB) together: pass a path or a key instead of the data"
        ));
    }
    Ok(())
}

/// The name a `${ITEM.<path>}` reference is replaced by before expansion; followed by its
/// index. Step environments never hold `DAGRID_*` names.
const FIELD_REF: &str = "DAGRID_ITEM_FIELD_";

/// `template` expanded with `ITEM` = the item's text and each `${ITEM.a.b}` = the field at
/// that path of an object item (a string as it is, anything else as its JSON; "" when the
/// item is no object or lacks the field). Values are inserted verbatim, never expanded.
fn expand_with_item(template: &str, item: &Item, lookup: Lookup<'_>) -> String {
    const OPEN: &str = "${ITEM.";
    let mut fields = Vec::new();
    let rewritten;
    let template = if template.contains(OPEN) {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(at) = rest.find(OPEN) {
            let after = &rest[at + OPEN.len()..];
            let Some(close) = after.find('}') else {
                break;
            };
            out.push_str(&rest[..at]);
            out.push_str(&format!("${{{FIELD_REF}{}}}", fields.len()));
            fields.push(field_at(item, &after[..close]));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        rewritten = out;
        rewritten.as_str()
    } else {
        template
    };
    vars::expand(template, |name| {
        if name == "ITEM" {
            return Some(item.text.clone());
        }
        if let Some(i) = name.strip_prefix(FIELD_REF) {
            if let Some(v) = i.parse::<usize>().ok().and_then(|i| fields.get(i)) {
                return Some(v.clone());
            }
        }
        lookup(name)
    })
}

/// The text of the field at dotted `path` of an object item, "" when there is none.
fn field_at(item: &Item, path: &str) -> String {
    let Some(fields) = &item.fields else {
        return String::new();
    };
    let mut parts = path.split('.');
    let mut value = parts.next().and_then(|k| fields.get(k));
    for key in parts {
        value = value.and_then(|v| v.get(key));
    }
    value.map(text_of).unwrap_or_default()
}

/// A JSON value as an item or a param: a string as it is, anything else as its JSON text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `s` split into items as Dagu's `stringutil.ParseSeparatedValues` does, after trimming:
/// a JSON array gives its elements (strings as their text, anything else as its JSON, `null`
/// as `null`); a JSON object is one item; text with line breaks gives its non-empty trimmed
/// lines; text with `"` quotes (2 or more, at an end or next to a space) gives the quoted
/// strings and the unquoted words; otherwise the most frequent of tab, `|`, `;`, `,` (a tie goes
/// to the earlier of these) splits it (pieces trimmed, empty ones dropped); with none, valid
/// JSON is one item and anything else splits on white space. Empty text: no items.
///
/// Unlike Dagu, quoted text is read by char, not by byte, so UTF-8 text is kept intact.
pub(crate) fn split_items(s: &str) -> Vec<String> {
    let s = s.trim();
    if s.is_empty() {
        return Vec::new();
    }
    let json: Option<Value> = serde_json::from_str(s).ok();
    if let Some(json) = &json {
        match json {
            Value::Array(items) => return items.iter().map(text_of).collect(),
            Value::Object(_) => return vec![s.to_string()],
            _ => {}
        }
    }
    if s.contains(['\n', '\r']) {
        return pieces(s.split(['\n', '\r']));
    }
    let quotes = s.matches('"').count();
    if quotes >= 2
        && (s.starts_with('"') || s.ends_with('"') || s.contains("\" ") || s.contains(" \""))
    {
        return quoted(s);
    }
    let mut best = 0;
    let mut separator = None;
    for sep in ['\t', '|', ';', ','] {
        let n = s.matches(sep).count();
        if n > best {
            best = n;
            separator = Some(sep);
        }
    }
    match separator {
        Some(sep) => pieces(s.split(sep)),
        None if json.is_some() => vec![s.to_string()],
        None => s.split_whitespace().map(str::to_string).collect(),
    }
}

/// The non-empty pieces, trimmed.
fn pieces<'a>(parts: impl Iterator<Item = &'a str>) -> Vec<String> {
    parts
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Dagu's `parseQuotedStrings`: each `"…"` is one item (even empty), each run of other
/// non-space chars outside quotes another; an unclosed quote runs to the end.
fn quoted(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            if in_quotes {
                out.push(std::mem::take(&mut current));
            }
            in_quotes = !in_quotes;
        } else if in_quotes {
            current.push(c);
        } else if !c.is_whitespace() {
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '"' {
                current.push(chars[i]);
                i += 1;
            }
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        i += 1;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests;
