//! Dagu's DAG-level `dotenv`: files of `NAME=value` lines loaded into a step's environment,
//! over what it inherits and under everything the task sets (params, `env`), so the DAG's
//! `env` can use them.
//!
//! Paths are expanded (`$VAR`, a leading `~`); a relative one is relative to the DAG's
//! `working_dir` when it has one (then `.env` there is loaded first, as Dagu prepends it),
//! else to the worker's directory. A missing or unreadable file is skipped (Dagu logs and
//! goes on); later files override earlier ones. Names starting with `DAGRID_` (the worker's
//! own settings) are never loaded.
//!
//! The format is godotenv's, without variable substitution: `NAME=value` or `export
//! NAME=value`, `#` comment lines, an unquoted value trimmed and cut at ` #`, a `'…'` value
//! literal, a `"…"` value with `\n`, `\t`, `\"` and `\\` escapes (and able to span lines).

use std::path::{Path, PathBuf};

use dagrid_shared::model::StepTask;

use crate::exec::Env;
use crate::vars;

/// Loads `task`'s dotenv files into `env`.
pub(crate) fn load(task: &StepTask, env: &mut Env<'_>) {
    if task.dag_values.dotenv.is_empty() {
        return;
    }
    // The DAG's working_dir may use params, which are set after the dotenv files.
    let base = task.dag_values.working_dir.as_deref().map(|raw| {
        let lookup = |n: &str| {
            env.get(n).or_else(|| {
                let mut set = task.env.iter().rev();
                set.find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        PathBuf::from(vars::expand(raw, lookup))
    });
    let base = base.filter(|b| !b.as_os_str().is_empty());
    let mut files: Vec<&str> = Vec::new();
    if base.is_some() {
        files.push(".env");
    }
    for file in &task.dag_values.dotenv {
        if !files.contains(&file.as_str()) {
            files.push(file);
        }
    }
    for file in files {
        let expanded = vars::expand(file, |n| env.get(n));
        let path = match (expanded.strip_prefix('~'), env.get("HOME")) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                PathBuf::from(format!("{home}{rest}"))
            }
            _ => PathBuf::from(&expanded),
        };
        let path = match &base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            tracing::debug!(file = %Path::new(&path).display(), "dotenv file not loaded (missing or unreadable)");
            continue;
        };
        for (name, value) in parse(&text) {
            if !name.starts_with("DAGRID_") {
                env.set(&name, value);
            }
        }
    }
}

/// The `NAME=value` pairs of a dotenv file, in order (see the module doc).
pub(crate) fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let mut next = line_end + 1;
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        if let Some((name, value)) = body.split_once('=').filter(|_| !trimmed.starts_with('#')) {
            let name = name.trim();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let value = value.trim_start();
            let parsed = if let Some(quoted) = value.strip_prefix('\'') {
                quoted
                    .split_once('\'')
                    .map_or(quoted.trim_end(), |(v, _)| v)
                    .to_string()
            } else if value.starts_with('"') {
                // A double-quoted value may span lines: read up to its closing quote.
                let open = line_end - value.len() + 1;
                let (v, used) = double_quoted(&text[open..]);
                let close = open + used;
                next = text[close..]
                    .find('\n')
                    .map_or(text.len(), |i| close + i + 1);
                v
            } else {
                let cut = value.find(" #").map_or(value, |i| &value[..i]);
                cut.trim_end().to_string()
            };
            if valid {
                out.push((name.to_string(), parsed));
            }
        }
        pos = next;
    }
    out
}

/// The value of a `"…"` string whose opening quote is already consumed, and how many bytes of
/// `text` it used (its closing quote included).
fn double_quoted(text: &str) -> (String, usize) {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, i + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, other)) => out.push(other),
                None => break,
            },
            other => out.push(other),
        }
    }
    (out, text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a `working_dir`, `.env` there is loaded first, then the listed files (relative to
    /// it, later ones winning); params and `env` override them; `DAGRID_*` never loads.
    #[test]
    fn files_load_under_the_task_env_relative_to_the_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "A=dot\nB=dot\nDAGRID_REDIS_URL=redis://x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("more.env"), "B=more\nC=more\n").unwrap();
        let mut task = crate::exec::tests::task("true");
        task.dag_values.working_dir = Some("${WD}".into());
        task.dag_values.dotenv = vec!["more.env".into(), "missing.env".into()];
        let wd = dir.path().display().to_string();
        task.env = vec![("WD".into(), wd), ("C".into(), "param".into())];
        let paths = crate::exec::AttemptPaths::new(dir.path(), &task);
        let inherited = crate::exec::tests::inherited();
        let env = crate::exec::step_env(&task, &paths, &inherited);
        assert_eq!(env.get("A").as_deref(), Some("dot"));
        assert_eq!(env.get("B").as_deref(), Some("more"));
        assert_eq!(env.get("C").as_deref(), Some("param"));
        assert!(env.overlay().iter().all(|(k, _)| k != "DAGRID_REDIS_URL"));
    }

    #[test]
    fn parses_the_godotenv_forms() {
        let text = "# comment\nA=1\nexport B = two words  # note\nC='lit $X # x'\nD=\"a\\nb \\\"q\\\"\"\n\nbad line\n1X=no\nE=\"multi\nline\"\nF=\n";
        let got = parse(text);
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X # x"),
            ("D", "a\nb \"q\""),
            ("E", "multi\nline"),
            ("F", ""),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }
}
