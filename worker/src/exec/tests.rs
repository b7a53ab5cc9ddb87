//! Tests of running steps as processes (no Redis needed).

use super::*;
use crate::env::file_name;
use crate::env::tests::{inherited, task};

/// [`super::spawn`] without a step supervisor: the worker crate's tests have no dagrid binary
/// to run as one (the root crate's tests run every step through it).
async fn spawn(task: &StepTask, log_dir: &Path, inherited: &Inherited) -> Result<Running, Outcome> {
    super::spawn(task, log_dir, inherited, &Launcher::Direct).await
}

fn script(script: &str) -> StepTask {
    StepTask {
        command: None,
        script: Some(script.into()),
        ..task("")
    }
}

/// Runs a step to its end in a fresh log directory.
async fn run(task: &StepTask) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let outcome = match spawn(task, dir.path(), &inherited()).await {
        Ok(running) => running.wait(std::future::pending()).await,
        Err(failed) => failed,
    };
    (outcome, dir)
}

fn tail(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.tail).into_owned()
}

/// A short step that prints little has its whole output in the tail and no log file
/// ([`LOG_HOLD`]); the file's path is still the attempt's.
#[tokio::test]
async fn stdout_and_stderr_land_in_the_tail() {
    let (o, dir) = run(&task("echo out-line; echo err-line >&2; echo out-2")).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(o.error, None);
    let expected = dir.path().join("dag-a/run-1.step-1.1.log");
    assert_eq!(o.log_path, expected);
    assert!(!expected.exists(), "held output makes no file");
    for line in ["out-line", "err-line", "out-2"] {
        assert!(tail(&o).contains(line), "{o:?}");
    }
    assert_eq!(o.written, tail(&o).len() as u64);
    assert!(o.finished_ms >= o.started_ms);
    assert_eq!(o.output, None, "no output variable, no output");
}

#[tokio::test]
async fn log_names_are_sanitised() {
    // Naming its log file makes it at once.
    let mut t = task("test -n \"$DAG_RUN_LOG_FILE\"; echo x");
    t.dag = "my dag/../x".into();
    t.run_id = "..".into();
    t.step = "st ép".into();
    t.attempt = 3;
    let (o, dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    let name = o
        .log_path
        .strip_prefix(dir.path())
        .unwrap()
        .display()
        .to_string();
    let parts: Vec<&str> = name.split('/').collect();
    assert_eq!(parts.len(), 2, "{name}");
    assert!(parts[0].starts_with("my_dag_.._x+"), "{name}");
    let (run, rest) = parts[1].split_once('.').unwrap();
    assert!(run.starts_with("__+"), "{name}");
    assert!(
        rest.starts_with("st__p+") && rest.ends_with(".3.log"),
        "{name}"
    );
    assert!(o.log_path.exists());
}

#[tokio::test]
async fn the_tail_keeps_the_last_16_kib_and_the_log_everything() {
    let (o, _dir) = run(&task("head -c 40000 /dev/zero")).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.tail.len(), TAIL_BYTES);
    assert_eq!(std::fs::metadata(&o.log_path).unwrap().len(), 40000);
}

#[tokio::test]
async fn output_is_captured_trimmed() {
    let mut t = task("printf '  hello world \\n\\n'");
    t.output = Some("GREETING".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.output, Some(("GREETING".into(), "hello world".into())));
}

#[tokio::test]
async fn output_only_captures_stdout() {
    let mut t = task("echo visible; echo hidden >&2");
    t.output = Some("OUT".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.output, Some(("OUT".into(), "visible".into())));
    assert!(tail(&o).contains("hidden"));
}

#[tokio::test]
async fn output_over_the_limit_fails_the_step() {
    let mut t = task(&format!("head -c {} /dev/zero", MAX_OUTPUT_BYTES + 1));
    t.output = Some("BIG".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(o.exit_code, Some(0));
    assert!(
        o.error.as_deref().unwrap().contains("maxOutputSize"),
        "{o:?}"
    );
    assert_eq!(o.output, None);
}

/// The DAG's `maxOutputSize` replaces the default limit: exactly the limit is captured, one
/// byte more fails with Dagu's message.
#[tokio::test]
async fn the_dags_max_output_size_is_the_limit() {
    for (bytes, fails) in [(10, false), (11, true)] {
        let mut t = task(&format!("head -c {bytes} /dev/zero | tr '\\0' x"));
        t.output = Some("OUT".into());
        t.max_output_size = Some(10);
        let (o, _dir) = run(&t).await;
        if fails {
            assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
            let error = o.error.as_deref().unwrap();
            assert!(
                error.contains("output exceeded maximum size limit of 10 bytes"),
                "{error}"
            );
        } else {
            assert_eq!(o.output, Some(("OUT".into(), "x".repeat(10))), "{o:?}");
        }
    }
}

#[tokio::test]
async fn env_entries_expand_in_order_over_the_worker_env() {
    let mut t = task("printenv C");
    t.env = vec![
        ("A".into(), "1".into()),
        ("B".into(), "${A}2".into()),
        ("C".into(), "$B-$1-$NOT_SET-${PATH:+x}".into()),
        ("A".into(), "changed".into()),
    ];
    t.expand = vec![0, 1, 2, 3];
    t.args = vec!["p1".into()];
    t.output = Some("C".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    // `${PATH:+x}`: Dagu evaluates the POSIX operators in env values (vars::expand_value).
    assert_eq!(o.output.unwrap().1, "12-p1--x");

    // The worker's own environment is inherited and visible to expansion.
    let mut t = task("printenv FROM_PATH");
    t.env = vec![("FROM_PATH".into(), "[$PATH]".into())];
    t.expand = vec![0];
    t.output = Some("V".into());
    let (o, _dir) = run(&t).await;
    let path = std::env::var("PATH").unwrap();
    assert_eq!(o.output.unwrap().1, format!("[{path}]"));
}

/// Values that test that a value is never expanded again: `$VAR`, `${VAR}`, `${VAR:-x}`,
/// backticks, `$(…)`, a positional param.
const TRAPS: &[&str] = &[
    "$HOME",
    "${HOME}",
    "${HOME:-x}",
    "`echo ran`",
    "$(echo ran)",
    "$1",
    "a ; echo ran",
];

#[tokio::test]
async fn param_and_output_values_are_never_expanded_again() {
    for trap in TRAPS {
        // Params and outputs (not listed in `expand`) around DAG-authored entries (listed).
        let mut t = task("printf '%s|' \"$P\" \"$OUT\" \"$AUTHORED\" \"$1\"");
        t.env = vec![
            ("P".into(), trap.to_string()),
            ("AUTHORED".into(), "<${P}>".into()),
            ("OUT".into(), trap.to_string()),
        ];
        t.expand = vec![1];
        t.args = vec![trap.to_string()];
        t.output = Some("V".into());
        let (o, _dir) = run(&t).await;
        assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
        assert_eq!(
            o.output.unwrap().1,
            format!("{trap}|{trap}|<{trap}>|{trap}|"),
            "shell path, value {trap:?}"
        );

        // The fast path (no shell): each reference is one argument holding the value as is.
        let mut t = task("printf %s, ${P} $AUTHORED $1");
        t.env = vec![
            ("P".into(), trap.to_string()),
            ("AUTHORED".into(), "<${P}>".into()),
        ];
        t.expand = vec![1];
        t.args = vec![trap.to_string()];
        t.output = Some("V".into());
        let (o, _dir) = run(&t).await;
        assert_eq!(
            o.output.unwrap().1,
            format!("{trap},<{trap}>,{trap},"),
            "fast path, value {trap:?}"
        );
    }
}

#[tokio::test]
async fn expand_indexes_out_of_order_or_range_expand_nothing_else() {
    let mut t = task("printf '%s|' \"$A\" \"$B\" \"$C\"");
    t.env = vec![
        ("A".into(), "${HOME}".into()),
        ("B".into(), "${HOME}".into()),
        ("C".into(), "${HOME}".into()),
    ];
    t.expand = vec![2, 0, 9];
    t.output = Some("V".into());
    let (o, _dir) = run(&t).await;
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(o.output.unwrap().1, format!("${{HOME}}|${{HOME}}|{home}|"));
}

#[tokio::test]
async fn steps_inherit_only_what_the_worker_lets_through() {
    // Rules over this test process's real environment (cargo sets CARGO_* for tests); the
    // DAGRID_* prefix is covered by step_env's tests and tests/it/step_env.rs.
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let rules = crate::env::inherited::StepEnv {
        deny: vec!["CARGO_PKG_*".into()],
        secrets: vec![manifest_dir.into()],
        ..Default::default()
    };
    let inherited = Inherited::from_process(&rules).unwrap();
    assert!(inherited.get("CARGO_PKG_NAME").is_none());
    let dir = tempfile::tempdir().unwrap();
    let mut t = task("env");
    // A DAG that asks for them by name gets nothing either.
    t.env = vec![("ASKED".into(), "[${CARGO_PKG_NAME}]".into())];
    t.expand = vec![0];
    let running = spawn(&t, dir.path(), &inherited).await.unwrap();
    let o = running.wait(std::future::pending()).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    let env = tail(&o);
    assert!(env.lines().any(|l| l == "ASKED=[]"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    for leak in ["CARGO_PKG_", manifest_dir] {
        assert!(!env.contains(leak), "{leak} reached the step:\n{env}");
    }
}

#[tokio::test]
async fn steps_whose_names_clean_alike_get_files_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    for pair in [
        ["s a", "s_a"],
        ["步骤", "阶段"],
        ["..", "__"],
        ["a/b", "a_b"],
    ] {
        let paths = pair.map(|step| {
            let mut t = task("true");
            t.step = step.into();
            AttemptPaths::new(dir.path(), &t)
        });
        assert_ne!(paths[0].log, paths[1].log, "{pair:?}");
        assert_ne!(paths[0].script, paths[1].script, "{pair:?}");
        for p in &paths {
            assert_eq!(p.log.parent(), Some(paths[0].dir.as_path()), "{p:?}");
            assert!(p.log.to_string_lossy().ends_with(".1.log"), "{p:?}");
        }
    }
    // The example of docs/operations.md.
    assert_eq!(file_name("s a"), "s_a+7ab48e1fa5ee7339");
    assert_eq!(file_name("plain-name_1.x"), "plain-name_1.x");
    // Long names stay short enough for a file system (255 bytes a name).
    let mut t = task("true");
    t.step = "x".repeat(5_000);
    let long = AttemptPaths::new(dir.path(), &t);
    assert!(long.log.file_name().unwrap().len() < 120, "{long:?}");

    // Both `#!` scripts run at once, each its own, each with its own log.
    let steps = ["s a", "s_a", "步骤", "阶段"];
    let (outcomes, _dir) = run_together(steps.iter().map(|step| {
        let mut t = script(&format!(
            "#!/bin/sh\nsleep 0.2\necho 'I am {step}' >> \"$DAG_RUN_LOG_FILE\"\n"
        ));
        t.step = step.to_string();
        t
    }))
    .await;
    for (step, o) in steps.iter().zip(outcomes) {
        assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
        let log = std::fs::read_to_string(&o.log_path).unwrap();
        assert_eq!(log, format!("I am {step}\n"), "{step}: {o:?}");
    }
}

/// Spawns every task at once (one log directory), then waits for each.
async fn run_together(tasks: impl Iterator<Item = StepTask>) -> (Vec<Outcome>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inherited = inherited();
    let mut running = Vec::new();
    for t in tasks {
        running.push(spawn(&t, dir.path(), &inherited).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for r in running {
        outcomes.push(r.wait(std::future::pending()).await);
    }
    (outcomes, dir)
}

#[tokio::test]
async fn the_log_file_is_in_the_env() {
    let mut t = task("printenv DAG_RUN_LOG_FILE");
    t.output = Some("LOG".into());
    let (o, _dir) = run(&t).await;
    let log = o.log_path.display().to_string();
    assert_eq!(o.output.unwrap().1, log);
    let mut t = task("printenv DAG_RUN_STEP_STDOUT_FILE");
    t.output = Some("LOG".into());
    let (o, _dir) = run(&t).await;
    assert!(o.output.unwrap().1.ends_with("dag-a/run-1.step-1.1.log"));
}

#[tokio::test]
async fn fast_path_params_stay_one_literal_argument_each() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut t = task("printf %s. $1 ${2} $3");
    assert!(!vars::needs_shell(t.command.as_deref().unwrap()));
    t.args = vec![
        "a b".into(),
        "; rm -rf /".into(),
        format!("$(touch {})", marker.display()),
    ];
    t.output = Some("OUT".into());
    let (o, _logs) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(
        o.output.unwrap().1,
        format!("a b.; rm -rf /.$(touch {}).", marker.display())
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn shell_path_gets_params_as_positional_args() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut t = task("printf '%s.' \"$1\" \"$2\" \"$0\" | cat");
    t.args = vec!["a b".into(), format!("$(touch {}); x", marker.display())];
    t.output = Some("OUT".into());
    let (o, _logs) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(
        o.output.unwrap().1,
        format!("a b.$(touch {}); x.dag-a.", marker.display())
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn an_explicit_shell_runs_the_command() {
    let mut t = task("echo \"$0:$1\"");
    t.shell = Some("sh -e".into());
    t.args = vec!["x".into()];
    t.output = Some("OUT".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.output.unwrap().1, "dag-a:x");
}

#[tokio::test]
async fn script_with_a_shebang_runs_as_a_file() {
    let mut t = script("#!/bin/sh\necho \"script $1 $#\"\n");
    t.args = vec!["arg one".into()];
    t.output = Some("OUT".into());
    let (o, dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.output.unwrap().1, "script arg one 1");
    let file = dir.path().join("dag-a/run-1.step-1.1.script");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[tokio::test]
async fn script_without_a_shebang_runs_in_the_shell() {
    let mut t = script("set -e\necho \"no shebang $1\"\necho \"$0\"\n");
    t.args = vec!["x".into()];
    let (o, dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(tail(&o), "no shebang x\ndag-a\n");
    assert!(!dir.path().join("dag-a/run-1.step-1.1.script").exists());
}

#[tokio::test]
async fn a_command_with_a_script_is_its_interpreter() {
    let mut t = script("echo \"interpreted $1\"\n");
    t.command = Some("sh".into());
    t.args = vec!["y".into()];
    t.output = Some("OUT".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.output.unwrap().1, "interpreted y");
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_code() {
    let (o, _dir) = run(&task("sh -c 'exit 3'")).await;
    assert_eq!(o.kind, ReportKind::Failed);
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(o.error.as_deref(), Some("exited with code 3"));

    let (o, _dir) = run(&task("exit 4")).await;
    assert_eq!(o.exit_code, Some(4), "shell builtins go through the shell");
}

#[tokio::test]
async fn a_signal_fails_without_an_exit_code() {
    let (o, _dir) = run(&script("#!/bin/sh\nkill -9 $$\n")).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(o.exit_code, None);
    assert_eq!(o.error.as_deref(), Some("killed by signal 9 (SIGKILL)"));
}

#[tokio::test]
async fn an_environment_value_over_linux_limit_names_the_variable() {
    // An `output` of an earlier step (a sub-DAG's results, say) over MAX_ARG_STRLEN.
    let mut t = task("true");
    t.env.push(("BIG".into(), "x".repeat(200 * 1024)));
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    let error = o.error.unwrap_or_default();
    assert!(
        error.contains("the biggest variable is BIG (204800 bytes)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_program_fails_with_a_helpful_error() {
    let (o, _dir) = run(&task("no-such-program-dagrid arg")).await;
    assert_eq!(o.kind, ReportKind::Failed);
    assert_eq!(o.exit_code, None);
    let error = o.error.clone().unwrap();
    assert_eq!(
        error,
        "program \"no-such-program-dagrid\" not found; check the step's command or PATH"
    );
    assert_eq!(tail(&o), error);
    let log = std::fs::read_to_string(&o.log_path).unwrap();
    assert!(log.contains(&error), "{log:?}");
}

#[tokio::test]
async fn a_missing_shell_or_dir_fails_with_a_helpful_error() {
    let mut t = task("echo hi");
    t.shell = Some("no-such-shell-dagrid".into());
    let (o, _dir) = run(&t).await;
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("shell \"no-such-shell-dagrid\" not found"),
        "{o:?}"
    );

    let mut t = task("echo hi");
    t.dir = Some("/no/such/dir/dagrid".into());
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Failed);
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("working directory \"/no/such/dir/dagrid\""),
        "{o:?}"
    );

    let (o, _dir) = run(&script("#!/no/such/interpreter\necho\n")).await;
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("#!/no/such/interpreter"),
        "{o:?}"
    );
}

#[tokio::test]
async fn dir_is_expanded_and_used() {
    let work = tempfile::tempdir().unwrap();
    let mut t = task("pwd");
    t.env = vec![("WORK".into(), work.path().display().to_string())];
    t.dir = Some("${WORK}".into());
    t.output = Some("OUT".into());
    let (o, _dir) = run(&t).await;
    let got = std::fs::canonicalize(o.output.unwrap().1).unwrap();
    assert_eq!(got, std::fs::canonicalize(work.path()).unwrap());
}

#[tokio::test]
async fn the_step_runs_in_its_own_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = task("ps -o pgid= -p $$");
    t.shell = Some("sh".into());
    t.output = Some("PGID".into());
    let running = spawn(&t, dir.path(), &inherited()).await.unwrap();
    let pid = running.pid().unwrap();
    let o = running.wait(std::future::pending()).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.output.unwrap().1, pid.to_string());
    let own_group = nix::unistd::getpgrp().as_raw() as u32;
    assert_ne!(own_group, pid);
}

#[tokio::test]
async fn leftover_background_processes_do_not_hold_the_step() {
    let started = std::time::Instant::now();
    let (o, _dir) = run(&task("sleep 4 & echo done")).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert!(tail(&o).contains("done"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn neither_command_nor_script_fails() {
    let mut t = task("");
    t.command = None;
    let (o, _dir) = run(&t).await;
    assert_eq!(o.kind, ReportKind::Failed);
    assert!(o.error.unwrap().contains("neither a command nor a script"));
}

#[test]
fn tail_does_not_start_inside_a_utf8_sequence() {
    let mut bytes = vec![b'a'; 10];
    bytes.extend("é".repeat(TAIL_BYTES).bytes());
    let t = finish_tail(bytes);
    assert!(std::str::from_utf8(&t).is_ok());
    assert!(t.len() <= TAIL_BYTES);
}

/// True while process `pid` runs (exists and is not a zombie).
fn running_pid(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|s| s.running()),
        Err(_) => false,
    }
}

/// Polls `f` every 20 ms until it is true or `within` passes; returns its last value.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `task` until `after`, then stops it for `cause`.
async fn run_stopped(
    task: &StepTask,
    after: Duration,
    cause: StopCause,
) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = spawn(task, dir.path(), &inherited()).await.unwrap();
    let outcome = running
        .wait(async {
            tokio::time::sleep(after).await;
            cause
        })
        .await;
    (outcome, dir)
}

#[test]
fn stop_signals_are_named_with_or_without_sig_or_numbered() {
    assert_eq!(parse_signal(None), Ok(Signal::SIGTERM));
    assert_eq!(parse_signal(Some(" ")), Ok(Signal::SIGTERM));
    assert_eq!(parse_signal(Some("SIGINT")), Ok(Signal::SIGINT));
    assert_eq!(parse_signal(Some("int")), Ok(Signal::SIGINT));
    assert_eq!(parse_signal(Some("sigusr1")), Ok(Signal::SIGUSR1));
    assert_eq!(parse_signal(Some("9")), Ok(Signal::SIGKILL));
    let e = parse_signal(Some("SIGNOPE")).unwrap_err();
    assert!(e.contains("\"SIGNOPE\" is not a signal name"), "{e}");
    assert!(parse_signal(Some("999")).is_err());
}

#[test]
fn proc_stat_lines_give_state_parent_group_and_session() {
    assert_eq!(
        parse_stat("4242 (sleep) S 1 4240 4230 0 -1 4194560 91 0"),
        Some(ProcStat {
            state: 'S',
            ppid: 1,
            pgrp: 4240,
            session: 4230
        })
    );
    // The command name may hold spaces and parentheses.
    let odd = parse_stat("77 (a (b) c) Z 5 70 60 0").expect("parsed");
    assert_eq!((odd.state, odd.pgrp, odd.session), ('Z', 70, 60));
    assert!(!odd.running());
    assert_eq!(parse_stat("garbage"), None);
}

#[test]
fn a_stop_says_why_and_whether_sigkill_was_needed() {
    let stopped = Stopped {
        cause: StopCause::TimedOut(Duration::from_secs(30)),
        signal: Signal::SIGTERM,
        grace: Duration::from_secs(5),
        killed: false,
    };
    assert_eq!(
        stopped.describe(),
        "timed out after 30s (step timeoutSec); stopped with SIGTERM"
    );
    let killed = Stopped {
        killed: true,
        signal: Signal::SIGINT,
        ..stopped
    };
    assert_eq!(
        killed.describe(),
        "timed out after 30s (step timeoutSec); stopped with SIGINT, then SIGKILL after 5s (maxCleanUpTimeSec)"
    );
    let released = Stopped {
        cause: StopCause::Released,
        ..stopped
    };
    assert_eq!(
        released.describe(),
        "handed back at worker shutdown; stopped with SIGTERM"
    );
}

#[tokio::test]
async fn a_timed_out_step_is_stopped_with_its_group_and_fails() {
    let pids = tempfile::tempdir().unwrap();
    let bg = pids.path().join("bg");
    let mut t = task(&format!("sleep 30 & echo $! > '{}'; wait", bg.display()));
    t.cleanup_ms = 5_000;
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(300);
    let (o, _dir) = run_stopped(&t, limit, StopCause::TimedOut(limit)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(o.exit_code, None);
    assert_eq!(
        o.error.as_deref(),
        Some("timed out after 300ms (step timeoutSec); stopped with SIGTERM")
    );
    assert!(!o.stopped.unwrap().killed);
    let bg: i32 = std::fs::read_to_string(&bg)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || !running_pid(bg)).await,
        "the step's background process {bg} survived"
    );
}

#[tokio::test]
async fn a_group_that_ignores_the_signal_is_killed_after_the_cleanup_grace() {
    let mut t = task("trap '' TERM; sleep 30 & wait");
    t.cleanup_ms = 300;
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(200);
    let (o, _dir) = run_stopped(&t, limit, StopCause::TimedOut(limit)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(o.exit_code, None);
    assert!(o.stopped.unwrap().killed);
    assert_eq!(
        o.error.as_deref(),
        Some("timed out after 200ms (step timeoutSec); stopped with SIGTERM, then SIGKILL after 300ms (maxCleanUpTimeSec)")
    );
}

#[tokio::test]
async fn the_stop_signal_is_the_steps_and_its_cleanup_output_is_logged() {
    // A foreground sleep: sh starts background jobs with SIGINT ignored.
    let mut t = task("trap 'echo cleaning up; exit 3' INT; sleep 30");
    t.stop_signal = Some("SIGINT".into());
    let limit = Duration::from_millis(300);
    let (o, _dir) = run_stopped(&t, limit, StopCause::TimedOut(limit)).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    let stopped = o.stopped.unwrap();
    assert_eq!(stopped.signal, Signal::SIGINT);
    assert!(!stopped.killed, "{o:?}");
    assert!(tail(&o).contains("cleaning up"), "{o:?}");
}

#[tokio::test]
async fn a_stop_after_the_step_ended_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = spawn(&task("true"), dir.path(), &inherited())
        .await
        .unwrap();
    let o = running
        .wait(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            StopCause::TimedOut(Duration::from_secs(1))
        })
        .await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.stopped, None);
}

#[tokio::test]
async fn a_dropped_step_has_its_group_killed() {
    let pids = tempfile::tempdir().unwrap();
    let bg = pids.path().join("bg");
    let dir = tempfile::tempdir().unwrap();
    let t = task(&format!("sleep 30 & echo $! > '{}'; wait", bg.display()));
    let running = spawn(&t, dir.path(), &inherited()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&bg)
            .is_ok_and(|s| s.ends_with('\n')))
        .await
    );
    let bg: i32 = std::fs::read_to_string(&bg)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running_pid(bg));
    drop(running);
    assert!(
        eventually(Duration::from_secs(2), || !running_pid(bg)).await,
        "the step's background process {bg} survived"
    );
}

#[tokio::test]
async fn a_step_stopped_at_shutdown_is_released() {
    let (o, _dir) = run_stopped(
        &task("sleep 30"),
        Duration::from_millis(100),
        StopCause::Released,
    )
    .await;
    assert_eq!(o.kind, ReportKind::Released, "{o:?}");
    assert_eq!(o.exit_code, None);
    assert_eq!(
        o.error.as_deref(),
        Some("handed back at worker shutdown; stopped with SIGTERM")
    );
}

#[tokio::test]
async fn released_before_start_is_a_released_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let o = released_before_start(&task("true"), dir.path());
    assert_eq!(o.kind, ReportKind::Released);
    assert_eq!(o.exit_code, None);
    assert_eq!(o.log_path, dir.path().join("dag-a/run-1.step-1.1.log"));
    assert!(o.error.unwrap().contains("before it started"));
}

#[test]
fn the_live_tail_is_published_once_a_second_at_most_and_only_when_output_grew() {
    let start = Instant::now();
    let mut rule = LiveRule::new(start);
    // Nothing written: never armed, never due.
    assert!(!rule.armed(0));
    assert!(!rule.take(start + Duration::from_secs(5), 0));
    // Output within the first second: not yet.
    assert!(rule.armed(10));
    assert!(!rule.take(start + Duration::from_millis(999), 10));
    // One second after the start, with output: publish, and remember the size.
    let first = start + LIVE_TAIL_INTERVAL;
    assert!(rule.take(first, 10));
    assert_eq!(rule.sent, 10);
    // No growth since: nothing to publish, however late.
    assert!(!rule.armed(10));
    assert!(!rule.take(first + Duration::from_secs(10), 10));
    // Growth, but less than a second after the last one: not yet.
    assert!(!rule.take(first + Duration::from_millis(500), 11));
    assert!(rule.take(first + LIVE_TAIL_INTERVAL, 11));
    assert_eq!(rule.due, first + 2 * LIVE_TAIL_INTERVAL);
}

/// Runs a step to its end with a live tail writer that records each publication.
type Published = Vec<(Vec<u8>, u64, Instant)>;

async fn run_live(task: &StepTask) -> (Outcome, Published, tempfile::TempDir) {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Published>> = Arc::default();
    let record = seen.clone();
    let write: LiveWrite = Box::new(move |tail, written| {
        record.lock().unwrap().push((tail, written, Instant::now()));
        Box::pin(async {})
    });
    let running = spawn(task, dir.path(), &inherited()).await.unwrap();
    let outcome = running
        .with_live_tail(write)
        .wait(std::future::pending())
        .await;
    let seen = seen.lock().unwrap().clone();
    (outcome, seen, dir)
}

#[tokio::test]
async fn a_step_that_ends_within_a_second_publishes_no_live_tail() {
    let (o, seen, _dir) = run_live(&task("echo quick")).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.written, 6);
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_running_step_publishes_its_growing_tail() {
    let (o, seen, _dir) = run_live(&script(
        "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done",
    ))
    .await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    let full = "line-1\nline-2\nline-3\nline-4\nline-5\nline-6\n";
    assert_eq!(tail(&o), full);
    assert_eq!(o.written, full.len() as u64);
    // About 2.4 s of output: at least one publication, each a prefix of the full output that
    // grew since the last, a second after the one before (the rule's times are exact; the
    // instants recorded here are when each write ran, which may lag its tick a little).
    assert!(!seen.is_empty(), "{seen:?}");
    let mut last: Option<(u64, Instant)> = None;
    for (bytes, written, at) in &seen {
        assert_eq!(bytes.as_slice(), &full.as_bytes()[..*written as usize]);
        if let Some((size, when)) = last {
            assert!(*written > size, "{seen:?}");
            assert!(
                *at - when >= LIVE_TAIL_INTERVAL - Duration::from_millis(50),
                "{seen:?}"
            );
        }
        last = Some((*written, *at));
    }
}

/// A step without an `output` variable writes stdout and stderr into one pipe, so its log
/// keeps the exact order of its writes; one with `output` still captures stdout alone.
#[tokio::test]
async fn without_output_stdout_and_stderr_share_one_pipe_in_order() {
    let lines = "for i in 1 2 3 4 5 6 7 8; do echo out-$i; echo err-$i >&2; done";
    let (o, _dir) = run(&task(lines)).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    let expected: String = (1..=8).map(|i| format!("out-{i}\nerr-{i}\n")).collect();
    assert_eq!(tail(&o), expected);

    let mut t = task(lines);
    t.output = Some("OUT".into());
    let (o, _dir) = run(&t).await;
    let captured: Vec<String> = (1..=8).map(|i| format!("out-{i}")).collect();
    assert_eq!(o.output.unwrap().1, captured.join("\n"));
}

/// For a step that names its own log file (so it is created before the process starts), a
/// log directory that cannot be made (a file is in the way) or a log file that cannot be made
/// (a directory is in the way) fails the attempt with a message naming the path and the fix,
/// before any process starts.
#[tokio::test]
async fn an_unwritable_log_dir_or_file_fails_a_step_naming_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("cat \"$DAG_RUN_LOG_FILE\"");
    // `<log dir>/<dag>` is a file: the attempt's directory cannot be made.
    std::fs::write(dir.path().join(&t.dag), b"").unwrap();
    let Err(failed) = spawn(&t, dir.path(), &inherited()).await else {
        panic!("the spawn must fail");
    };
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("cannot create the log directory") && error.contains("--log-dir"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let paths = AttemptPaths::new(dir.path(), &t);
    // The log file's path is a directory: the file cannot be made.
    std::fs::create_dir_all(&paths.log).unwrap();
    let Err(failed) = spawn(&t, dir.path(), &inherited()).await else {
        panic!("the spawn must fail");
    };
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("cannot create the log file"), "{error}");
}

/// A step that writes nothing, or little and briefly, creates no directory and no log file
/// (the costliest part of a short step on a journalled file system): its output is the tail.
/// One whose output passes [`TAIL_BYTES`], or that runs past [`LOG_HOLD`], gets its full log;
/// one that names `$DAG_RUN_LOG_FILE` finds the (empty) file there from its start.
#[tokio::test]
async fn the_log_file_is_made_when_the_output_outgrows_the_hold() {
    let (silent, dir) = run(&task("true")).await;
    assert_eq!(silent.kind, ReportKind::Succeeded);
    assert!(!silent.log_path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no directory for a silent step"
    );

    let (short, _dir) = run(&task("echo hello")).await;
    assert_eq!(short.kind, ReportKind::Succeeded);
    assert!(!short.log_path.exists());
    assert_eq!(tail(&short), "hello\n");

    // More than the tail holds: a file with all of it, the held part first.
    let (big, _dir) = run(&task(
        "echo first; head -c 20000 /dev/zero | tr '\\0' x; echo",
    ))
    .await;
    assert_eq!(big.kind, ReportKind::Succeeded, "{:?}", big.error);
    let log = std::fs::read_to_string(&big.log_path).unwrap();
    assert!(
        log.starts_with("first\nxxx") && log.len() == 6 + 20_000 + 1,
        "{}",
        log.len()
    );

    // A failed attempt keeps its log in a file: the next attempt's tail replaces its own.
    let (failed, _dir) = run(&task("echo oops; exit 3")).await;
    assert_eq!(failed.kind, ReportKind::Failed);
    assert_eq!(std::fs::read_to_string(&failed.log_path).unwrap(), "oops\n");

    // Printed early, then ran past the hold: the file is made at the end.
    let (slow, _dir) = run(&task("echo early; sleep 1.2")).await;
    assert_eq!(slow.kind, ReportKind::Succeeded, "{:?}", slow.error);
    assert_eq!(std::fs::read_to_string(&slow.log_path).unwrap(), "early\n");

    // Printed after the hold: the file is made by that output.
    let (late, _dir) = run(&task("sleep 1.2; echo late")).await;
    assert_eq!(late.kind, ReportKind::Succeeded, "{:?}", late.error);
    assert_eq!(std::fs::read_to_string(&late.log_path).unwrap(), "late\n");

    let (named, _dir) = run(&task("test -f \"$DAG_RUN_STEP_STDOUT_FILE\"")).await;
    assert_eq!(named.kind, ReportKind::Succeeded, "{:?}", named.error);
    assert!(named.log_path.exists());

    // Lines a step appends to its own log stay beside its output.
    let (own, _dir) = run(&task("echo mine >> \"$DAG_RUN_LOG_FILE\"; echo out")).await;
    assert_eq!(own.kind, ReportKind::Succeeded, "{:?}", own.error);
    assert_eq!(
        std::fs::read_to_string(&own.log_path).unwrap(),
        "mine\nout\n"
    );
}

/// A step whose log file cannot be created when its output spills (past [`LOG_HOLD`]) still
/// runs to its end, and its tail still carries the output (the worker warns in its own log;
/// its start already checked that `--log-dir` is writable).
#[tokio::test]
async fn a_log_file_that_cannot_be_created_late_loses_only_the_full_log() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("sleep 1.1; echo still-runs");
    std::fs::write(dir.path().join(&t.dag), b"").unwrap();
    let running = spawn(&t, dir.path(), &inherited()).await.expect("starts");
    let outcome = running.wait(std::future::pending()).await;
    assert_eq!(outcome.kind, ReportKind::Succeeded, "{:?}", outcome.error);
    assert_eq!(tail(&outcome), "still-runs\n");
}

/// What steps inherit when the worker's `SHELL` is `shell` (`None`: unset).
fn inherited_with_shell(shell: Option<&str>) -> Inherited {
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(name, _)| name != "SHELL")
        .collect();
    if let Some(shell) = shell {
        vars.push(("SHELL".into(), shell.into()));
    }
    Inherited::capture(&crate::env::inherited::StepEnv::default(), vars).unwrap()
}

/// Runs a step with `inherited` to its end in a fresh log directory.
async fn run_with(task: &StepTask, inherited: &Inherited) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let outcome = match spawn(task, dir.path(), inherited).await {
        Ok(running) => running.wait(std::future::pending()).await,
        Err(failed) => failed,
    };
    (outcome, dir)
}

#[test]
fn the_default_shell_is_the_workers_shell_else_sh_with_errexit_for_the_sh_family() {
    use crate::env::DefaultShell;
    let of = |shell: Option<&str>| DefaultShell::from_env(shell.map(std::ffi::OsStr::new));
    assert_eq!(of(None).program, "sh");
    assert_eq!(of(Some("  ")).program, "sh");
    assert_eq!(of(Some("/bin/bash")).program, "/bin/bash");
    for (shell, errexit) in [
        (None, true),
        (Some("/bin/bash"), true),
        (Some("/usr/bin/zsh"), true),
        (Some("/bin/dash"), true),
        (Some("/usr/bin/fish"), false),
        (Some("/usr/bin/python3"), false),
    ] {
        assert_eq!(of(shell).errexit, errexit, "{shell:?}");
    }
    assert_eq!(of(None).args(), ["-e"]);
    assert!(of(Some("fish")).args().is_empty());
    assert_eq!(inherited_with_shell(None).shell().program, "sh");
}

#[tokio::test]
async fn the_workers_shell_runs_commands_that_need_one() {
    // As in Dagu, `echo {1..3}` is brace-expanded when the worker's $SHELL is bash.
    let mut t = task("echo {1..3}");
    t.output = Some("OUT".into());
    let (o, _dir) = run_with(&t, &inherited_with_shell(Some("bash"))).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(o.output.unwrap().1, "1 2 3");
    let (o, _dir) = run_with(&t, &inherited_with_shell(None)).await;
    assert_eq!(o.output.unwrap().1, "{1..3}", "sh has no brace expansion");
}

#[tokio::test]
async fn the_default_shell_stops_a_script_at_its_first_failure() {
    // Dagu runs a script with its default shell as `sh -e`: the failing line fails the step.
    let t = script("echo before\nfalse\necho after\n");
    let (o, _dir) = run_with(&t, &inherited_with_shell(None)).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(tail(&o), "before\n");
    // A shell the file names runs as written (no -e added).
    let mut t = script("echo before\nfalse\necho after\n");
    t.shell = Some("sh".into());
    let (o, _dir) = run_with(&t, &inherited_with_shell(None)).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    assert_eq!(tail(&o), "before\nafter\n");
}

#[tokio::test]
async fn a_joined_command_list_stops_at_the_first_failure_with_its_code() {
    // What the parser makes of `command: [cd /, "exit 4", echo never]`.
    let mut t = task("(\ncd /\n) && (\nexit 4\n) && (\necho never\n)");
    t.output = Some("OUT".into());
    let (o, _dir) = run_with(&t, &inherited_with_shell(None)).await;
    assert_eq!(o.kind, ReportKind::Failed, "{o:?}");
    assert_eq!(o.exit_code, Some(4), "{o:?}");
    let mut t = task("(\ncd /\n) && (\npwd\n)");
    t.output = Some("OUT".into());
    t.dir = Some(std::env::temp_dir().display().to_string());
    let (o, _dir) = run_with(&t, &inherited_with_shell(None)).await;
    assert_eq!(o.kind, ReportKind::Succeeded, "{o:?}");
    let expected = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    assert_eq!(
        o.output.unwrap().1,
        expected.display().to_string(),
        "cd does not carry over"
    );
}

#[tokio::test]
async fn a_pipe_read_buffer_is_allocated_on_first_output_and_grows_only_while_reads_fill_it() {
    let (tx, rx) = pipe::pipe().unwrap();
    let mut rx = Some(rx);
    let mut buf = Vec::new();
    // A quiet step: nothing is allocated while the pipe has no bytes.
    let quiet = tokio::time::timeout(Duration::from_millis(50), read_from(&mut rx, &mut buf)).await;
    assert!(quiet.is_err(), "no bytes yet");
    assert_eq!(buf.capacity(), 0, "a quiet step holds no read buffer");
    tx.try_write(b"hello").unwrap();
    assert_eq!(read_from(&mut rx, &mut buf).await.unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(buf.len(), FIRST_READ, "a small first buffer");
    // A read that fills the buffer doubles it, keeping what it read, up to READ_CHUNK.
    tx.try_write(&vec![7u8; FIRST_READ]).unwrap();
    assert_eq!(read_from(&mut rx, &mut buf).await.unwrap(), FIRST_READ);
    assert_eq!(buf.len(), 2 * FIRST_READ);
    assert!(buf[..FIRST_READ].iter().all(|&b| b == 7));
    for _ in 0..4 {
        let n = tx.try_write(&vec![1u8; buf.len()]).unwrap();
        assert_eq!(read_from(&mut rx, &mut buf).await.unwrap(), n);
    }
    assert_eq!(buf.len(), READ_CHUNK, "never more than READ_CHUNK");
    drop(tx);
    assert_eq!(
        read_from(&mut rx, &mut buf).await.unwrap(),
        0,
        "end of output"
    );
}
