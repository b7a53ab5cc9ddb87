//! Bounds on hostile input, checked around the YAML parser: the file's size and flow-nesting
//! depth before parsing (the parser's cost grows with depth times line length, so a 200 KB
//! line of `{a: ` would otherwise take seconds), NUL bytes in any string after it, and the
//! size of param values.

use serde_yaml::Value;

use super::report::{child, item, Report};
use super::{DagError, MAX_DAG_BYTES, MAX_FLOW_DEPTH, MAX_PARAMS_BYTES, MAX_PARAM_VALUE_BYTES};

/// Refuses a file over [`MAX_DAG_BYTES`] or with flow collections nested deeper than
/// [`MAX_FLOW_DEPTH`], in one linear scan.
///
/// The scan counts a `[` or `{` as opening a flow collection only where YAML allows one to
/// start (at the start of a line or after `:`, `-`, `?`, `,`, `[` or `{`), outside quotes and
/// comments; brackets inside plain text (`if [ -f x ]`) do not count. It may miss exotic
/// nestings: the parser's own recursion limit stays the final guard.
pub(super) fn check_source(yaml: &str) -> Result<(), DagError> {
    if yaml.len() > MAX_DAG_BYTES {
        return Err(DagError::new(
            "",
            format!(
                "the DAG file is {} bytes; dagrid accepts at most {MAX_DAG_BYTES} bytes (1 MiB), \
                 split it into smaller DAGs",
                yaml.len()
            ),
        ));
    }
    let mut depth = 0usize;
    let mut line = 1usize;
    // Last byte that was not a space or tab on this line (b'\n' at a line's start).
    let mut prev = b'\n';
    // The byte just before this one.
    let mut last = b'\n';
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut escaped = false;
    for &b in yaml.as_bytes() {
        if b == b'\n' {
            line += 1;
            prev = b'\n';
            last = b'\n';
            comment = false;
            escaped = false;
            continue;
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if q == b'"' && b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
                prev = b;
            }
            last = b;
            continue;
        }
        let at_start = matches!(prev, b'\n' | b':' | b'-' | b'?' | b',' | b'[' | b'{');
        match b {
            b'#' if matches!(last, b' ' | b'\t' | b'\n') => comment = true,
            b'"' | b'\'' if at_start => quote = Some(b),
            // Plain text (`echo [[`): the next bracket does not open a collection either.
            b'[' | b'{' if !at_start => {
                prev = b'.';
                last = b;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(DagError::new(
                        "",
                        format!(
                            "invalid YAML: flow collections ([…] or {{…}}) are nested more than \
                             {MAX_FLOW_DEPTH} levels deep (line {line}); nest less deeply"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !matches!(b, b' ' | b'\t' | b'\r') {
            prev = b;
        }
        last = b;
    }
    Ok(())
}

/// Reports every string (value or key) holding a NUL byte, at its field path: a process
/// cannot take one in its arguments or environment ("nul byte found"), so such a command,
/// script, env value or default could never run.
pub(super) fn check_nul(value: &Value, field: &str, report: &mut Report) {
    match value {
        Value::String(s) if s.contains('\0') => report.error(
            field,
            "contains a NUL byte (\\0), which no command, argument or environment variable can \
             hold; remove it",
        ),
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                if !report.has_room() {
                    return;
                }
                check_nul(v, &item(field, i), report);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                if !report.has_room() {
                    return;
                }
                let name = k.as_str().unwrap_or("?");
                if name.contains('\0') {
                    report.error(
                        field,
                        "a key contains a NUL byte (\\0); remove it".to_string(),
                    );
                    continue;
                }
                check_nul(v, &child(field, name), report);
            }
        }
        Value::Tagged(t) => check_nul(&t.value, field, report),
        _ => {}
    }
}

/// Why a param value cannot be passed to a step, if it cannot: a NUL byte, or more than
/// [`MAX_PARAM_VALUE_BYTES`] bytes.
pub(super) fn param_value_problem(value: &str) -> Option<String> {
    if value.contains('\0') {
        return Some(
            "contains a NUL byte (\\0), which no command or environment variable can hold; \
             remove it"
                .into(),
        );
    }
    if value.len() > MAX_PARAM_VALUE_BYTES {
        return Some(format!(
            "is {} bytes; a param value is at most {MAX_PARAM_VALUE_BYTES} bytes (32 KiB): pass \
             a path or URL to larger data instead",
            value.len()
        ));
    }
    None
}

/// Why a run's param values are too large together (more than [`MAX_PARAMS_BYTES`] bytes), if
/// they are.
pub(super) fn params_total_problem<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let total: usize = values.map(str::len).sum();
    (total > MAX_PARAMS_BYTES).then(|| {
        format!(
            "the param values add up to {total} bytes; a run's params are at most \
             {MAX_PARAMS_BYTES} bytes (64 KiB) together: pass a path or URL to larger data instead"
        )
    })
}
