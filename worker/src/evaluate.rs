//! The once-per-run evaluation of a DAG's values, on the worker of the task that carries
//! [`DagValues::evaluate`] (see [`dagrid_shared::model::DagValues`] and
//! docs/architecture.md, "Values a run evaluates once").
//!
//! As Dagu builds a DAG (`internal/core/spec/variables.go`, `dparams_runtime.go`): the typed
//! params with `eval` that the caller gave no value are computed first, in declared order
//! (one that fails takes its `default`, and fails the attempt without one; the value is
//! checked against the param's type); then every DAG `env` value, in order, each seeing the
//! ones before it. A value is expanded with [`vars::expand_value`] and its backtick commands
//! are replaced by their output: each runs as `<shell> -c <command> <dag> <params…>` (the
//! environment's `SHELL`, else the worker's default shell, without `-e`)
//! in the environment built so far (so `$VAR` inside it is the shell's expansion of data,
//! never code), in the DAG's `working_dir`, with Dagu's 2 s limit, and its stdout, trimmed,
//! replaces it; a command that fails or times out fails the attempt. `` \` `` is kept as
//! written. The task is then rewritten to hold the values as data, and its reports carry
//! them ([`DagValues::resolved`]).

use std::process::Stdio;
use std::time::Duration;

use dagrid_shared::model::{DagValues, Resolved, StepTask};
use tokio::process::Command;

use crate::env::{self, AttemptPaths, Env, Inherited};
use crate::vars;

/// How long one backtick command may run (Dagu's `substituteCommandTimeout`, 2 s on Unix).
pub(crate) const SUBSTITUTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Evaluates the run's values when `task` carries [`DagValues::evaluate`], and rewrites the
/// task to use them (see the module doc). Nothing to do otherwise.
///
/// # Errors
/// The message of the failed attempt: which value, which command, how it failed.
pub(crate) async fn run_once(
    task: &mut StepTask,
    log_dir: &std::path::Path,
    inherited: &Inherited,
) -> Result<(), String> {
    let Some(what) = task.dag_values.evaluate.clone() else {
        return Ok(());
    };
    let at = (what.at as usize).min(task.env.len());
    let mut prefix = task.clone();
    prefix.env.truncate(at);
    prefix.expand.clear();
    let paths = AttemptPaths::new(log_dir, task);
    let mut env = env::step_env(&prefix, &paths, inherited);
    let dir = env::dag_dir(task, &env);
    // Dagu runs a backtick command with the scope's SHELL, else its default shell.
    let shell = env
        .get("SHELL")
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| inherited.shell().program.clone());
    let at_dir = Where {
        dir: dir.as_deref(),
        shell: &shell,
    };
    let mut resolved = Resolved::default();
    for param in &what.params {
        let Some(name) = param.name.as_deref() else {
            continue;
        };
        let Some(typed) = param.typed.as_deref() else {
            continue;
        };
        let expression = typed.eval.as_deref().unwrap_or_default();
        let value = match text(expression, &env, &at_dir).await {
            Ok(value) => value,
            Err(_) if typed.has_default => param.default.clone(),
            Err(e) => {
                return Err(format!(
                    "param {name}: its eval failed and it has no default: {e}"
                ))
            }
        };
        let value = typed.check(&value).map_err(|why| {
            format!("param {name}: its eval gave a value that does not fit: {why}")
        })?;
        env.set(name, value.clone());
        resolved.params.push((name.to_string(), value));
    }
    for &index in &what.env {
        let Some((name, raw)) = task.env.get(index as usize).cloned() else {
            continue;
        };
        let value = text(&raw, &env, &at_dir)
            .await
            .map_err(|e| format!("env {name}: {e}"))?;
        env.set(&name, value.clone());
        resolved.env.push(value);
    }
    apply(task, at, &what.env, resolved);
    Ok(())
}

/// Rewrites `task` to hold `resolved`: the computed params inserted at `at` (named env
/// entries, and `$n` after the others), the DAG's `env` entries (`dag_env`) set to their
/// values and no longer expanded.
fn apply(task: &mut StepTask, at: usize, dag_env: &[u32], resolved: Resolved) {
    let shift = resolved.params.len() as u32;
    for (i, &index) in dag_env.iter().enumerate() {
        if let (Some(entry), Some(value)) = (task.env.get_mut(index as usize), resolved.env.get(i))
        {
            entry.1.clone_from(value);
        }
    }
    task.expand.retain(|i| !dag_env.contains(i));
    for i in &mut task.expand {
        if *i as usize >= at {
            *i += shift;
        }
    }
    for (offset, param) in resolved.params.iter().enumerate() {
        task.env.insert(at + offset, param.clone());
    }
    task.args
        .extend(resolved.params.iter().map(|(_, v)| v.clone()));
    let values: &mut DagValues = &mut task.dag_values;
    values.resolved = Some(resolved);
}

/// Where backtick commands run: the DAG's working directory (`None`: the worker's) and the
/// shell.
struct Where<'a> {
    dir: Option<&'a str>,
    shell: &'a str,
}

/// One value: backtick commands replaced by their output, the rest expanded. An unpaired
/// backtick and what follows it stay as written, as in Dagu.
async fn text(template: &str, env: &Env<'_>, at: &Where<'_>) -> Result<String, String> {
    let expand = |plain: &str| vars::expand_value(plain, &|n| env.get(n));
    let mut out = String::new();
    let mut plain_from = 0;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'`') => i += 2,
            b'`' => {
                let Some(len) = template[i + 1..].find('`') else {
                    break;
                };
                out.push_str(&expand(&template[plain_from..i]));
                let command = &template[i + 1..i + 1 + len];
                if command.is_empty() {
                    out.push_str("``");
                } else {
                    out.push_str(&substitute(command, env, at).await?);
                }
                i += len + 2;
                plain_from = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&expand(&template[plain_from..]));
    Ok(out)
}

/// Runs one backtick command; its stdout, trimmed.
async fn substitute(command: &str, env: &Env<'_>, at: &Where<'_>) -> Result<String, String> {
    let shell = at.shell;
    let mut cmd = Command::new(shell);
    env.apply(&mut cmd);
    let args = (1..).map_while(|n: usize| env.get(&n.to_string()));
    cmd.arg("-c")
        .arg(command)
        .arg(env.get("0").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = at.dir {
        cmd.current_dir(dir);
    }
    let output = match tokio::time::timeout(SUBSTITUTION_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "the command `{command}` did not finish within {} s (Dagu's limit for a backtick command)",
                SUBSTITUTION_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("the command `{command}` could not start ({shell}): {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let how = match output.status.code() {
            Some(code) => format!("exited {code}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(format!("the command `{command}` {how}: {}", stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrid_shared::dag::Dag;
    use dagrid_shared::model::Evaluate;

    fn task_of(yaml: &str) -> StepTask {
        let dag = Dag::parse(yaml, "d").unwrap();
        let mut task = crate::env::tests::task("true");
        task.env = vec![("DAG_NAME".into(), "d".into()), ("P".into(), "p1".into())];
        task.args = vec!["p1".into()];
        let at = task.env.len() as u32;
        let mut expand = Vec::new();
        for e in &dag.env {
            expand.push(task.env.len() as u32);
            task.env.push((e.name.clone(), e.value.clone()));
        }
        task.env.push(("S".into(), "${B}!".into()));
        expand.push(task.env.len() as u32 - 1);
        task.expand = expand;
        task.dag_values.evaluate = Some(Evaluate {
            at,
            env: (at..at + dag.env.len() as u32).collect(),
            params: dag
                .params
                .iter()
                .filter(|p| p.typed.as_ref().is_some_and(|t| t.eval.is_some()))
                .cloned()
                .collect(),
        });
        task
    }

    #[tokio::test]
    async fn env_and_eval_params_are_evaluated_in_order_and_become_data() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "params:\n  - name: N\n    type: integer\n    eval: \"`echo 4`\"\nenv:\n  - A: \"`printf '%s-%s' \\\"$P\\\" \\\"$N\\\"`\"\n  - B: \"${A:-x}/`echo \\\"$1\\\"`/\\\\`x\"\nsteps:\n  - {name: s, command: 'true'}\n";
        let mut task = task_of(yaml);
        run_once(&mut task, dir.path(), &crate::env::tests::inherited())
            .await
            .unwrap();
        let r = task.dag_values.resolved.clone().unwrap();
        assert_eq!(r.params, [("N".to_string(), "4".to_string())]);
        assert_eq!(r.env, ["p1-4", "p1-4/p1/\\`x"]);
        let env: Vec<(&str, &str)> = task
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("DAG_NAME", "d"),
                ("P", "p1"),
                ("N", "4"),
                ("A", "p1-4"),
                ("B", "p1-4/p1/\\`x"),
                ("S", "${B}!")
            ]
        );
        assert_eq!(
            task.expand,
            [5],
            "only the step's own env is expanded later"
        );
        assert_eq!(task.args, ["p1", "4"]);
    }

    #[tokio::test]
    async fn a_failing_command_fails_with_its_value_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = task_of(
            "env:\n  - A: \"`echo oops >&2; exit 3`\"\nsteps:\n  - {name: s, command: 'true'}\n",
        );
        let e = run_once(&mut task, dir.path(), &crate::env::tests::inherited())
            .await
            .unwrap_err();
        assert!(
            e.contains("env A: the command `echo oops >&2; exit 3` exited 3: oops"),
            "{e}"
        );
        // An eval param falls back to its default.
        let mut task = task_of("params:\n  - name: N\n    default: d\n    eval: \"`false`\"\nsteps:\n  - {name: s, command: 'true'}\n");
        run_once(&mut task, dir.path(), &crate::env::tests::inherited())
            .await
            .unwrap();
        assert_eq!(
            task.dag_values.resolved.unwrap().params,
            [("N".to_string(), "d".to_string())]
        );
    }

    #[tokio::test]
    async fn a_slow_command_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut task =
            task_of("env:\n  - A: \"`sleep 5`\"\nsteps:\n  - {name: s, command: 'true'}\n");
        let started = std::time::Instant::now();
        let e = run_once(&mut task, dir.path(), &crate::env::tests::inherited())
            .await
            .unwrap_err();
        assert!(e.contains("did not finish within 2 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
