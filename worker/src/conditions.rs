//! Dagu's `preconditions` and `continueOn.output`, evaluated on the worker (the coordinator never
//! runs user commands).
//!
//! Before a claimed step starts, [`gate`] checks the DAG's conditions (carried by the run's
//! first task only) and then the step's own (unless the task says to ignore them), in file
//! order, in the environment and working directory the step's process would get
//! ([`env::step_env`], [`env::step_dir`]):
//!
//! * **With `expected`** (a value check): backtick commands in the condition are run by the
//!   step's shell (`<shell> -c <command> <dag> <params…>`, with the step's environment, so
//!   `${VAR}` inside them is expanded by the shell and a param value is never parsed as code),
//!   replaced by their stdout without trailing newlines; `$VAR`, `${VAR}` and `$1`… outside
//!   backticks are expanded as in a step's command ([`crate::vars::expand`]). The result must
//!   equal `expected` (the whole text or one of its lines), or match its `re:` pattern.
//! * **Without `expected`** (a command check): the condition runs as `<shell> -c <condition>
//!   <dag> <params…>` with stdin, stdout and stderr on /dev/null; exit 0 means it holds, and a
//!   command that cannot start does not hold.
//! * `negate: true` inverts the result.
//!
//! A step condition that does not hold makes a [`ReportKind::Skipped`] outcome, a DAG one a
//! [`ReportKind::DagPreconditionsUnmet`] outcome, each with an error naming the condition and
//! what it got; a step condition that cannot be evaluated (its working directory is missing,
//! a backtick command cannot start) fails the attempt, as in Dagu. The step's process is not
//! started in any of these cases.
//!
//! After a failed attempt of a step with `continueOn.output`, [`output_matched`] looks for the
//! patterns in its log (stdout and stderr as they arrived), line by line.
//!
//! After a succeeded or failed attempt of a step with a `repeatPolicy`, [`repeat_wanted`]
//! evaluates the policy's check (its `condition` as a precondition is evaluated, with the
//! step's own `output` variable set when the attempt captured one, as Dagu reloads it; else
//! the exit code, else the outcome); the report carries the answer and the coordinator applies
//! the `limit` and the wait.

use std::path::Path;
use std::process::Stdio;

use dagrid_shared::dag::{expected_matches, output_matches, Condition};
use dagrid_shared::model::{now_ms, ReportKind, StepTask};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

use crate::env::{self, AttemptPaths, Env, Inherited};
use crate::exec::Outcome;
use crate::vars;

/// Where a check runs: the step's environment, working directory and shell.
struct Ctx<'a> {
    task: &'a StepTask,
    env: Env<'a>,
    dir: Option<String>,
}

/// Checks `task`'s preconditions. `None`: they hold (or there are none), start the step.
/// `Some`: the outcome to report instead of running it (skipped, the DAG's conditions unmet,
/// or failed when a condition could not be evaluated).
pub(crate) async fn gate(
    task: &StepTask,
    log_dir: &Path,
    inherited: &Inherited,
) -> Option<Outcome> {
    let own = if task.ignore_preconditions {
        &[][..]
    } else {
        &task.preconditions[..]
    };
    if task.dag_preconditions.is_empty() && own.is_empty() {
        return None;
    }
    let paths = AttemptPaths::new(log_dir, task);
    let env = env::step_env(task, &paths, inherited);
    let dir = env::step_dir(task, &env);
    let not_started = |kind: ReportKind, message: String| Some(not_started(&paths, kind, message));
    let ctx = match dir {
        Ok(dir) => Ctx { task, env, dir },
        Err(message) if !task.dag_preconditions.is_empty() => {
            let message = format!("the DAG's preconditions could not be checked: {message}");
            return not_started(ReportKind::DagPreconditionsUnmet, message);
        }
        Err(message) => {
            let message = format!("the step's preconditions could not be checked: {message}");
            return not_started(ReportKind::Failed, message);
        }
    };
    for (index, condition) in task.dag_preconditions.iter().enumerate() {
        match evaluate(&ctx, condition).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                let message = format!("DAG precondition {} did not hold: {why}", index + 1);
                return not_started(ReportKind::DagPreconditionsUnmet, message);
            }
            Err(e) => {
                let message = format!("DAG precondition {} could not be checked: {e}", index + 1);
                return not_started(ReportKind::DagPreconditionsUnmet, message);
            }
        }
    }
    for (index, condition) in own.iter().enumerate() {
        match evaluate(&ctx, condition).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                let message = format!("precondition {} did not hold: {why}", index + 1);
                return not_started(ReportKind::Skipped, message);
            }
            Err(e) => {
                let message = format!("precondition {} could not be checked: {e}", index + 1);
                return not_started(ReportKind::Failed, message);
            }
        }
    }
    None
}

/// The outcome of an attempt whose process was not started because of its preconditions.
pub(crate) fn not_started(paths: &AttemptPaths, kind: ReportKind, message: String) -> Outcome {
    let now = now_ms();
    Outcome {
        kind,
        started_ms: now,
        finished_ms: now,
        exit_code: None,
        written: message.len() as u64,
        tail: message.clone().into_bytes(),
        error: Some(message),
        output: None,
        log_path: paths.log.clone(),
        stopped: None,
    }
}

/// One condition: `Ok(None)` when it holds (after `negate`), `Ok(Some(why))` when it does not.
///
/// # Errors
/// It cannot be evaluated: the shell does not parse, a backtick command cannot start, a `re:`
/// pattern does not compile.
async fn evaluate(ctx: &Ctx<'_>, c: &Condition) -> Result<Option<String>, String> {
    let negated = if c.negate { " (negate: true)" } else { "" };
    match &c.expected {
        Some(expected) => {
            let text = expand(ctx, &c.condition).await?;
            let matched = expected_matches(expected, &text)?;
            if matched != c.negate {
                return Ok(None);
            }
            let verb = if matched { "matches" } else { "does not match" };
            Ok(Some(format!(
                "\"{}\" gave \"{text}\", which {verb} expected \"{expected}\"{negated}",
                c.condition
            )))
        }
        None => {
            let (held, got) = match run(ctx, &c.condition, Stdio::null()).await {
                Ok(output) => match output.status.code() {
                    Some(0) => (true, "exited 0".to_string()),
                    Some(code) => (false, format!("exited {code}")),
                    None => (false, "was killed by a signal".to_string()),
                },
                Err(e) => (false, format!("could not start: {e}")),
            };
            if held != c.negate {
                return Ok(None);
            }
            Ok(Some(format!("\"{}\" {got}{negated}", c.condition)))
        }
    }
}

/// The condition text with backtick commands replaced by their output and `$VAR`, `${VAR}`,
/// `$1`… expanded outside them. An unpaired backtick stays as it is.
async fn expand(ctx: &Ctx<'_>, text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        out.push_str(&vars::expand(&rest[..open], |n| ctx.env.get(n)));
        let command = &rest[open + 1..open + 1 + len];
        let output = run(ctx, command, Stdio::piped())
            .await
            .map_err(|e| format!("the command `{command}` could not start: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        out.push_str(stdout.trim_end_matches(['\n', '\r']));
        rest = &rest[open + 2 + len..];
    }
    out.push_str(&vars::expand(rest, |n| ctx.env.get(n)));
    Ok(out)
}

/// Runs `code` as `<shell> -c <code> <dag> <params…>` in the step's environment and directory,
/// stdin and stderr on /dev/null, stdout to `stdout`; waits for it.
async fn run(ctx: &Ctx<'_>, code: &str, stdout: Stdio) -> Result<std::process::Output, String> {
    let (program, words) = ctx.env.shell_words(ctx.task.shell.as_deref())?;
    let mut cmd = Command::new(&program);
    ctx.env.apply(&mut cmd);
    cmd.args(words)
        .arg("-c")
        .arg(code)
        .arg(&ctx.task.dag)
        .args(&ctx.task.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = &ctx.dir {
        cmd.current_dir(dir);
    }
    cmd.output()
        .await
        .map_err(|e| format!("shell \"{program}\": {e}"))
}

/// For a succeeded or failed attempt of a step with a `repeatPolicy`: whether its check says
/// to run the step again ([`dagrid_shared::dag::RepeatPolicy::wants`]); false without a
/// check after the last execution the policy's `limit` allows. A condition that
/// cannot be evaluated (its working directory is gone, a backtick command cannot start) does
/// not hold, as in Dagu (`EvalCondition` returning an error): a `while` stops, an `until` goes
/// on. False for a step without a policy and for any other outcome.
pub(crate) async fn repeat_wanted(
    task: &StepTask,
    outcome: &Outcome,
    log_dir: &Path,
    inherited: &Inherited,
) -> bool {
    let Some(policy) = &task.repeat else {
        return false;
    };
    let ok = match outcome.kind {
        ReportKind::Succeeded => true,
        ReportKind::Failed => false,
        _ => return false,
    };
    // Dagu checks the limit first: after the last execution allowed, no check runs.
    if !policy.allows_after(task.repeats.saturating_add(1)) {
        return false;
    }
    let held = match &policy.condition {
        None => None,
        Some(condition) => {
            let paths = AttemptPaths::new(log_dir, task);
            let mut env = env::step_env(task, &paths, inherited);
            if let Some((name, value)) = &outcome.output {
                env.set(name, value.clone());
            }
            let held = match env::step_dir(task, &env) {
                Ok(dir) => {
                    let ctx = Ctx { task, env, dir };
                    matches!(evaluate(&ctx, condition).await, Ok(None))
                }
                Err(_) => false,
            };
            Some(held)
        }
    };
    policy.wants(held, outcome.exit_code, ok)
}

/// For a failed attempt of a step with `continueOn.output`: whether a line of its output (its
/// log file, else the tail the outcome carries) matches one of the patterns.
pub(crate) async fn output_matched(task: &StepTask, outcome: &Outcome) -> bool {
    if task.continue_on_output.is_empty() || outcome.kind != ReportKind::Failed {
        return false;
    }
    let patterns = &task.continue_on_output;
    // An attempt that wrote nothing made no log file: one found there is another
    // execution's (an attempt handed back and run again under the same number).
    let file = match outcome.written {
        0 => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        _ => tokio::fs::File::open(&outcome.log_path).await,
    };
    match file {
        Ok(file) => {
            let mut reader = tokio::io::BufReader::new(file);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        if output_matches(patterns, text.trim_end_matches(['\n', '\r'])) {
                            return true;
                        }
                    }
                }
            }
        }
        Err(_) => String::from_utf8_lossy(&outcome.tail)
            .lines()
            .any(|line| output_matches(patterns, line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(env: &[(&str, &str)], args: &[&str]) -> StepTask {
        let mut task = crate::env::tests::task("true");
        task.env = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        // DAG-authored entries, expanded in order.
        task.expand = (0..env.len() as u32).collect();
        task.args = args.iter().map(|a| (*a).to_string()).collect();
        task
    }

    fn value(condition: &str, expected: &str, negate: bool) -> Condition {
        Condition {
            condition: condition.into(),
            expected: Some(expected.into()),
            negate,
        }
    }

    fn command(condition: &str, negate: bool) -> Condition {
        Condition {
            condition: condition.into(),
            expected: None,
            negate,
        }
    }

    async fn check(task: &StepTask, c: Condition) -> Option<Outcome> {
        let dir = tempfile::tempdir().unwrap();
        let mut task = task.clone();
        task.preconditions = vec![c];
        gate(&task, dir.path(), &crate::env::tests::inherited()).await
    }

    #[tokio::test]
    async fn value_checks_expand_variables_params_and_backticks() {
        let t = task(&[("MODE", "fast"), ("OUT", "${MODE}-x")], &["first", "a b"]);
        assert!(check(&t, value("${MODE}", "fast", false)).await.is_none());
        assert!(check(&t, value("$OUT", "fast-x", false)).await.is_none());
        assert!(check(&t, value("$1/$2", "first/a b", false))
            .await
            .is_none());
        assert!(check(&t, value("`echo $MODE; echo two`", "two", false))
            .await
            .is_none());
        assert!(
            check(&t, value("n=`printf 12345`", "re:^n=[0-9]{4,}$", false))
                .await
                .is_none()
        );
        // A param holding shell code is text to the backtick's shell, never code.
        let evil = task(&[], &["$(echo pwned)"]);
        assert!(
            check(&evil, value("`printf %s \"$1\"`", "$(echo pwned)", false))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_value_that_does_not_match_skips_with_what_it_got() {
        let t = task(&[("MODE", "slow")], &[]);
        let outcome = check(&t, value("${MODE}", "fast", false)).await.unwrap();
        assert_eq!(outcome.kind, ReportKind::Skipped);
        let error = outcome.error.unwrap();
        assert!(error.contains("gave \"slow\""), "{error}");
        assert!(
            error.contains("does not match expected \"fast\""),
            "{error}"
        );
        let outcome = check(&t, value("${MODE}", "re:^f", false)).await.unwrap();
        assert_eq!(outcome.kind, ReportKind::Skipped);
    }

    #[tokio::test]
    async fn negate_inverts_value_and_command_checks() {
        let t = task(&[("MODE", "slow")], &[]);
        assert!(check(&t, value("${MODE}", "fast", true)).await.is_none());
        let outcome = check(&t, value("${MODE}", "slow", true)).await.unwrap();
        assert!(outcome.error.unwrap().contains("negate"));
        assert!(check(&t, command("false", true)).await.is_none());
        assert!(check(&t, command("true", true)).await.is_some());
    }

    #[tokio::test]
    async fn command_checks_hold_on_exit_zero_in_the_steps_environment() {
        let t = task(&[("MODE", "fast")], &["p1"]);
        assert!(check(
            &t,
            command("test \"$MODE\" = fast && test \"$1\" = p1", false)
        )
        .await
        .is_none());
        let outcome = check(&t, command("exit 3", false)).await.unwrap();
        assert_eq!(outcome.kind, ReportKind::Skipped);
        assert!(outcome.error.unwrap().contains("exited 3"));
    }

    #[tokio::test]
    async fn ignored_step_conditions_still_check_the_dags() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(&[], &[]);
        t.preconditions = vec![command("false", false)];
        t.ignore_preconditions = true;
        assert!(gate(&t, dir.path(), &crate::env::tests::inherited())
            .await
            .is_none());
        t.dag_preconditions = vec![value("x", "y", false)];
        let outcome = gate(&t, dir.path(), &crate::env::tests::inherited())
            .await
            .unwrap();
        assert_eq!(outcome.kind, ReportKind::DagPreconditionsUnmet);
        assert!(outcome.error.unwrap().starts_with("DAG precondition 1"));
    }

    #[tokio::test]
    async fn a_missing_working_directory_fails_the_step() {
        let mut t = task(&[], &[]);
        t.dir = Some("/no/such/dir/here".into());
        let outcome = check(&t, command("true", false)).await.unwrap();
        assert_eq!(outcome.kind, ReportKind::Failed);
    }

    #[tokio::test]
    async fn output_patterns_are_looked_for_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, "starting\nWARN: disk low\nbye\n").unwrap();
        let mut t = task(&[], &[]);
        let outcome = Outcome {
            log_path: log,
            ..not_started(
                &AttemptPaths::new(dir.path(), &t),
                ReportKind::Failed,
                "x".into(),
            )
        };
        t.continue_on_output = vec!["re:^WARN: disk".into()];
        assert!(output_matched(&t, &outcome).await);
        t.continue_on_output = vec!["ERROR".into()];
        assert!(!output_matched(&t, &outcome).await);
        t.continue_on_output = vec!["disk low".into()];
        assert!(output_matched(&t, &outcome).await);
    }

    /// The repeat check: a condition sees the step's own output of this execution; exit codes
    /// and the outcome decide without one; no check runs after the last execution the limit
    /// allows (a marker file shows whether the condition command ran).
    #[tokio::test]
    async fn the_repeat_check_reads_the_own_output_and_skips_at_the_limit() {
        use dagrid_shared::dag::{RepeatMode, RepeatPolicy};
        let dir = tempfile::tempdir().unwrap();
        let inherited = crate::env::tests::inherited();
        let mut t = task(&[], &[]);
        let policy = |mode, condition: Option<Condition>, exit_codes: Vec<i32>, limit| {
            Some(RepeatPolicy {
                mode,
                condition,
                exit_codes,
                interval_ms: 0,
                limit,
                backoff_milli: 0,
                max_interval_ms: None,
            })
        };
        let paths = AttemptPaths::new(dir.path(), &t);
        let outcome = |kind: ReportKind, code: i32, out: &str| Outcome {
            exit_code: Some(code),
            output: Some(("N".to_string(), out.to_string())),
            ..not_started(&paths, kind, "x".into())
        };
        assert!(
            !repeat_wanted(
                &t,
                &outcome(ReportKind::Succeeded, 0, "1"),
                dir.path(),
                &inherited
            )
            .await,
            "no policy"
        );

        t.repeat = policy(RepeatMode::Until, Some(value("$N", "3", false)), vec![], 0);
        let ok = |n| outcome(ReportKind::Succeeded, 0, n);
        assert!(repeat_wanted(&t, &ok("2"), dir.path(), &inherited).await);
        assert!(!repeat_wanted(&t, &ok("3"), dir.path(), &inherited).await);

        t.repeat = policy(RepeatMode::While, None, vec![3], 0);
        assert!(
            repeat_wanted(
                &t,
                &outcome(ReportKind::Failed, 3, ""),
                dir.path(),
                &inherited
            )
            .await
        );
        assert!(
            !repeat_wanted(
                &t,
                &outcome(ReportKind::Failed, 4, ""),
                dir.path(),
                &inherited
            )
            .await
        );
        t.repeat = policy(RepeatMode::While, None, vec![], 0);
        assert!(repeat_wanted(&t, &ok(""), dir.path(), &inherited).await);
        assert!(
            !repeat_wanted(
                &t,
                &outcome(ReportKind::Skipped, 0, ""),
                dir.path(),
                &inherited
            )
            .await
        );

        let marker = dir.path().join("ran");
        let probe = command(&format!("touch {}; false", marker.display()), false);
        t.repeat = policy(RepeatMode::Until, Some(probe), vec![], 2);
        t.repeats = 1;
        assert!(!repeat_wanted(&t, &ok(""), dir.path(), &inherited).await);
        assert!(!marker.exists(), "execution 2 of 2: no check");
        t.repeats = 0;
        assert!(repeat_wanted(&t, &ok(""), dir.path(), &inherited).await);
        assert!(marker.exists());
    }
}
