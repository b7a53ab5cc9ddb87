//! Running one step attempt as a process: choosing what to execute ([`invocation`]: the
//! program directly, a shell, or a script file), spawning it in its own process group through
//! the worker's step supervisor, logging its output and keeping its tail, stopping its group
//! ([`stop_group`]) on a timeout, a lost claim or the end of the shutdown grace
//! ([`StopCause`]), and turning how it ended into an [`Outcome`]. Its environment, working
//! directory and file paths come from [`crate::env`].
//!
//! What users see of this is in docs/dag-format.md ("How a step runs"); the supervisor, the
//! pipes and the stop sequence are in docs/architecture.md ("Step processes", "Stop").

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use dagrid_shared::model::{now_ms, ReportKind, StepTask};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{pipe2, Pid};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::env::{step_dir, step_env, AttemptPaths, Env, Inherited};
use crate::supervisor::{Launcher, Supervised};
use crate::vars;

/// How much of the end of a step's combined stdout and stderr is kept as its tail (16 KiB).
pub(crate) const TAIL_BYTES: usize = 16 * 1024;
/// The most stdout an `output` variable captures when the DAG sets no `maxOutputSize` (1 MiB,
/// Dagu's default); a step whose stdout is longer fails, as in Dagu.
pub(crate) const MAX_OUTPUT_BYTES: usize = dagrid_shared::dag::DEFAULT_MAX_OUTPUT_SIZE as usize;
/// After the step's process exits, how long to keep reading pipes that processes it left
/// behind (for example `sleep 100 &`) still hold open, before the step is reported anyway.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Size of each read from a pipe.
const READ_CHUNK: usize = 64 * 1024;
/// The first size of a pipe's read buffer, allocated when the pipe first has bytes: a step
/// that writes nothing holds no buffer, one that writes a little holds this much, and the
/// buffer doubles up to [`READ_CHUNK`] only while reads fill it (so a worker with many
/// slots of quiet steps stays small).
const FIRST_READ: usize = 4 * 1024;
/// How often to retry a spawn that failed with ETXTBSY (a freshly written script file still
/// open in a process another thread was forking at that moment).
const TEXT_BUSY_RETRIES: u32 = 10;
/// ETXTBSY on Linux and the BSDs.
const ETXTBSY: i32 = 26;
/// While a stopped step's process group cleans up, how often to check whether it has exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Least time between two publications of a running step's tail, and from its start to the
/// first (1 s).
pub(crate) const LIVE_TAIL_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes a running step's tail: called with the last [`TAIL_BYTES`] of the combined output
/// and the total bytes written so far; the future ends once the tail is stored (or could not
/// be: the writer logs its own errors). See [`Running::with_live_tail`].
pub(crate) type LiveWrite =
    Box<dyn Fn(Vec<u8>, u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// When a running step's tail is published: once [`LiveRule::due`] has passed and the output
/// grew since the last publication ([`LiveRule::armed`]); the first time one
/// [`LIVE_TAIL_INTERVAL`] after the start, so a step that ends within it never publishes (its
/// final report carries the tail) and a silent step costs no timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveRule {
    /// Not before this.
    pub(crate) due: Instant,
    /// Total bytes written when the tail was last published (0: never).
    pub(crate) sent: u64,
}

impl LiveRule {
    /// The rule for a step started at `start`: the first publication one
    /// [`LIVE_TAIL_INTERVAL`] later.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            due: start + LIVE_TAIL_INTERVAL,
            sent: 0,
        }
    }

    /// True when, with `written` bytes written so far, a publication is wanted once
    /// [`LiveRule::due`] comes: the output grew since the last one.
    pub(crate) fn armed(&self, written: u64) -> bool {
        written > self.sent
    }

    /// Whether to publish now, at `now` with `written` bytes written; when so, the rule
    /// records it (the next not before `now` + [`LIVE_TAIL_INTERVAL`]).
    pub(crate) fn take(&mut self, now: Instant, written: u64) -> bool {
        if now < self.due || !self.armed(written) {
            return false;
        }
        self.sent = written;
        self.due = now + LIVE_TAIL_INTERVAL;
        true
    }
}

/// How a step attempt ended, with everything its final report needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// [`ReportKind::Succeeded`] or [`ReportKind::Failed`]; [`ReportKind::Released`] for an
    /// attempt handed back at shutdown.
    pub(crate) kind: ReportKind,
    /// When the process started, or when the attempt failed to start (ms).
    pub(crate) started_ms: u64,
    /// When it ended (ms).
    pub(crate) finished_ms: u64,
    /// The exit code; `None` when killed by a signal or never started.
    pub(crate) exit_code: Option<i32>,
    /// Why it failed, for people.
    pub(crate) error: Option<String>,
    /// The `output` variable and its value (trimmed stdout), when the step succeeded.
    pub(crate) output: Option<(String, String)>,
    /// The last [`TAIL_BYTES`] of the combined output (or the reason it could not start).
    pub(crate) tail: Vec<u8>,
    /// Total bytes of combined output (the tail's length for an attempt that never ran), so
    /// the tail holds bytes `written - tail.len()` to `written` of the full log.
    pub(crate) written: u64,
    /// The attempt's log file.
    pub(crate) log_path: PathBuf,
    /// Set when the step was stopped before it ended by itself.
    pub(crate) stopped: Option<Stopped>,
}

/// Why a running step is stopped before it ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// It ran for its whole `timeoutSec` (this long); the attempt fails.
    TimedOut(Duration),
    /// This worker no longer holds the step's ready entry: a coordinator reclaimed it or its
    /// run was stopped. Another attempt, if any, is someone else's.
    Lost,
    /// The worker is shutting down and its shutdown grace ran out; the attempt is handed back.
    Released,
    /// This worker could not renew its lease on the step for this long (Redis unreachable): a
    /// coordinator may soon hand the step to another worker, so it stops with at most half the
    /// fence margin (`lease::fence_margin`) of cleanup grace, and reports the attempt lost once
    /// Redis answers.
    Fenced {
        /// How long the lease went without a renewal.
        after: Duration,
        /// The longest cleanup grace allowed before SIGKILL.
        grace: Duration,
    },
}

/// How a step was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped {
    /// Why.
    pub(crate) cause: StopCause,
    /// The signal sent first (the step's `signalOnStop`, default SIGTERM).
    pub(crate) signal: Signal,
    /// How long the group had to exit after `signal` (the DAG's `maxCleanUpTimeSec`).
    pub(crate) grace: Duration,
    /// True when processes of the group were still running after `grace` and got SIGKILL.
    pub(crate) killed: bool,
}

impl Stopped {
    /// Why the attempt ended, for people: `timed out after 30s (step timeoutSec); stopped with
    /// SIGTERM`, with `, then SIGKILL after 5s (maxCleanUpTimeSec)` when SIGKILL was needed.
    pub(crate) fn describe(&self) -> String {
        let why = match self.cause {
            StopCause::TimedOut(after) => format!(
                "timed out after {} (step timeoutSec)",
                humantime::format_duration(after)
            ),
            StopCause::Lost => {
                "this worker no longer holds the step (reclaimed by a coordinator, or its run was stopped)".to_string()
            }
            StopCause::Released => "handed back at worker shutdown".to_string(),
            StopCause::Fenced { after, .. } => format!(
                "this worker could not renew its lease on the step for {} (Redis unreachable); stopped before another worker may run it",
                humantime::format_duration(after)
            ),
        };
        let mut how = format!("{why}; stopped with {}", self.signal.as_str());
        if self.killed && self.signal != Signal::SIGKILL {
            how.push_str(&format!(
                ", then SIGKILL after {} (maxCleanUpTimeSec)",
                humantime::format_duration(self.grace)
            ));
        }
        how
    }
}

/// A step's process once started: spawned by the worker's step supervisor (the default) or
/// by the worker itself ([`Launcher`]).
#[derive(Debug)]
enum StepProcess {
    /// Spawned by the worker (`--steps-die-with-worker false`); tokio reaps it.
    Direct(Child),
    /// Spawned by the supervisor, which reports its exit; `exit` is `None` once received, and
    /// `ended` holds the status when it came with the spawn's reply (a short step), until
    /// taken.
    Supervised {
        pid: u32,
        exit: Option<oneshot::Receiver<io::Result<ExitStatus>>>,
        ended: Option<io::Result<ExitStatus>>,
    },
}

impl StepProcess {
    /// Its pid, also its process group id.
    fn pid(&self) -> Option<u32> {
        match self {
            StepProcess::Direct(child) => child.id(),
            StepProcess::Supervised { pid, .. } => Some(*pid),
        }
    }

    /// Waits for its end (cancel-safe: call again after a dropped wait). Not called again
    /// once it returned.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            StepProcess::Direct(child) => child.wait().await,
            StepProcess::Supervised {
                ended: ended @ Some(_),
                ..
            } => ended.take().expect("matched"),
            StepProcess::Supervised { exit, .. } => match exit {
                Some(rx) => {
                    let status = rx
                        .await
                        .unwrap_or_else(|_| Err(io::Error::other("the step supervisor went away")));
                    *exit = None;
                    status
                }
                None => std::future::pending().await,
            },
        }
    }

    /// Its exit status if it already ended.
    fn try_wait(&mut self) -> Option<io::Result<ExitStatus>> {
        match self {
            StepProcess::Direct(child) => child.try_wait().transpose(),
            StepProcess::Supervised {
                ended: ended @ Some(_),
                ..
            } => ended.take(),
            StepProcess::Supervised { exit, .. } => {
                let status = match exit.as_mut()?.try_recv() {
                    Ok(status) => status,
                    Err(oneshot::error::TryRecvError::Empty) => return None,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Err(io::Error::other("the step supervisor went away"))
                    }
                };
                *exit = None;
                Some(status)
            }
        }
    }
}

/// A step process that has started.
pub(crate) struct Running {
    process: StepProcess,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    /// What the pipes held, read at the start ([`Started::early`]).
    early: [Vec<u8>; 2],
    group: Group,
    log: LazyLog,
    log_path: PathBuf,
    output: Option<String>,
    /// The most stdout `output` captures (the DAG's `maxOutputSize`, bytes).
    output_limit: usize,
    started_ms: u64,
    stop_signal: Signal,
    cleanup: Duration,
    live: Option<LiveWrite>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("process", &self.process)
            .field("log_path", &self.log_path)
            .field("started_ms", &self.started_ms)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

/// What to execute: a program and its arguments, and what the program is (for error messages).
#[derive(Debug)]
struct Invocation {
    program: String,
    args: Vec<String>,
    role: Role,
}

/// What role the executed program plays, so a spawn failure names the right thing to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The step's own program (fast path, or the interpreter named by `command`).
    Program,
    /// The shell running the command or script.
    Shell,
    /// A `#!` script file.
    Script,
}

/// Spawns the step's process. `Ok` once it runs (report it started at
/// [`Running::started_ms`]); `Err` with a failed [`Outcome`] when it could not be started, its
/// `error` saying what failed and how to fix it.
pub(crate) async fn spawn(
    task: &StepTask,
    log_dir: &Path,
    inherited: &Inherited,
    launcher: &Launcher,
) -> Result<Running, Outcome> {
    let paths = AttemptPaths::new(log_dir, task);
    let fail = |message: String| failed_to_start(&paths.log, message);
    let mut log = LazyLog::new(&paths);
    if names_its_log(task) {
        // The step reads or hands on its own log file: it must exist from the start.
        if let Err(e) = log.open_fresh().await {
            return Err(fail(e.to_string()));
        }
    }
    let stop_signal = match parse_signal(task.stop_signal.as_deref()) {
        Ok(signal) => signal,
        Err(message) => {
            tracing::warn!(cause = %message, "the step's stop signal is not a signal; using SIGTERM");
            Signal::SIGTERM
        }
    };
    match start(task, &paths, inherited, launcher).await {
        Ok(Started {
            process,
            stdout,
            stderr,
            early,
            started_ms,
            group,
        }) => Ok(Running {
            process,
            stdout,
            stderr,
            early,
            group,
            log,
            log_path: paths.log,
            output: task.output.clone(),
            output_limit: task.max_output_size.map_or(MAX_OUTPUT_BYTES, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
            started_ms: started_ms.unwrap_or_else(now_ms),
            stop_signal,
            cleanup: Duration::from_millis(task.cleanup_ms),
            live: None,
        }),
        Err(message) => {
            // Best effort: the report carries the same text.
            let _ = log.write(format!("{message}\n").as_bytes()).await;
            let _ = log.flush().await;
            Err(fail(message))
        }
    }
}

/// A failed outcome for an attempt that never ran.
fn failed_to_start(log_path: &Path, message: String) -> Outcome {
    let now = now_ms();
    Outcome {
        kind: ReportKind::Failed,
        started_ms: now,
        finished_ms: now,
        exit_code: None,
        written: message.len() as u64,
        tail: message.clone().into_bytes(),
        error: Some(message),
        output: None,
        log_path: log_path.to_path_buf(),
        stopped: None,
    }
}

/// The outcome of an attempt handed back at shutdown before its process started
/// ([`ReportKind::Released`]); its log path is where its log would have gone.
pub(crate) fn released_before_start(task: &StepTask, log_dir: &Path) -> Outcome {
    let message = "handed back at worker shutdown before it started".to_string();
    Outcome {
        kind: ReportKind::Released,
        tail: Vec::new(),
        written: 0,
        ..failed_to_start(&AttemptPaths::new(log_dir, task).log, message)
    }
}

/// The signal named by a step's `signalOnStop`: `SIGINT`, `INT` or `sigint`, or a number;
/// `None` (or blank) is SIGTERM.
///
/// # Errors
/// A message naming the value when it is no signal.
fn parse_signal(name: Option<&str>) -> Result<Signal, String> {
    let Some(raw) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(Signal::SIGTERM);
    };
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{raw} is not a signal number"));
    }
    let upper = raw.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full)
        .map_err(|_| format!("\"{raw}\" is not a signal name; use one such as SIGTERM or SIGINT"))
}

/// A process just started: its exit, the read ends of its pipes and its registered group.
struct Started {
    process: StepProcess,
    /// Its stdout, and its stderr too when it has no pipe of its own (one pipe for both);
    /// `None` once read to its end.
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    /// What its pipes held when it had already ended as it was found started (stdout or
    /// both, then stderr), read to their end without waiting.
    early: [Vec<u8>; 2],
    /// When the supervisor started it (ms since the epoch), if it said.
    started_ms: Option<u64>,
    group: Group,
}

/// Builds the environment and command line and spawns the process (through the worker's step
/// supervisor, or directly: [`Launcher`]), registered in the registry of process groups.
/// `Err` is the message for the failed report.
async fn start(
    task: &StepTask,
    paths: &AttemptPaths,
    inherited: &Inherited,
    launcher: &Launcher,
) -> Result<Started, String> {
    let env = step_env(task, paths, inherited);
    let dir = step_dir(task, &env)?;

    let invocation = invocation(task, paths, &env).await?;
    tracing::debug!(
        program = %invocation.program,
        args = ?invocation.args,
        dir = ?dir,
        supervised = matches!(launcher, Launcher::Supervised(_)),
        "starting step process"
    );
    // Without an `output` variable nothing tells stdout from stderr: both go to one pipe (one
    // pipe fewer to make, watch and close per step, and the log keeps the exact order in
    // which the step wrote them). With one, stdout has a pipe of its own to be captured.
    let combined = task.output.is_none();
    let mut tries = 0;
    loop {
        let pipes = || -> io::Result<_> {
            let (out_r, out_w) = output_pipe()?;
            if combined {
                let err_w = out_w.try_clone()?;
                return Ok(((out_r, out_w), (None, err_w)));
            }
            let (err_r, err_w) = output_pipe()?;
            Ok(((out_r, out_w), (Some(err_r), err_w)))
        };
        let ((out_r, out_w), (err_r, err_w)) = pipes().map_err(|e| {
            format!("cannot create the pipes of the step's output: {e}; raise the worker's open-file limit (ulimit -n)")
        })?;
        let spawned = match launcher {
            Launcher::Supervised(supervisor) => supervisor
                .spawn(
                    &invocation.program,
                    &invocation.args,
                    env.overlay(),
                    dir.as_deref(),
                    out_w,
                    err_w,
                )
                .await
                .map(
                    |Supervised {
                         pid,
                         started_ms,
                         exit,
                     }| {
                        let mut process = StepProcess::Supervised {
                            pid,
                            exit: Some(exit),
                            ended: None,
                        };
                        // A short step's exit comes with the spawn's reply: keep it for the
                        // wait, and read its pipes now, without registering them.
                        let ended = process.try_wait();
                        if let StepProcess::Supervised { ended: slot, .. } = &mut process {
                            *slot = ended;
                        }
                        (process, (started_ms > 0).then_some(started_ms))
                    },
                ),
            Launcher::Direct => {
                let mut cmd = Command::new(&invocation.program);
                env.apply(&mut cmd);
                cmd.args(&invocation.args)
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(out_w)
                    .stderr(err_w)
                    .kill_on_drop(true);
                if let Some(dir) = &dir {
                    cmd.current_dir(dir);
                }
                // `cmd`, dropped at the end of this arm, holds the pipes' write ends.
                cmd.spawn().map(|child| (StepProcess::Direct(child), None))
            }
        };
        match spawned {
            Ok((process, started_ms)) => {
                // A child not yet waited for always has its pid; never make a group of pid 0,
                // which `killpg` would read as the worker's own group.
                let Some(pid) = process.pid().filter(|&pid| pid > 0) else {
                    return Err(format!(
                        "program \"{}\" started but has no process id",
                        invocation.program
                    ));
                };
                let group = Group::register(pid);
                let ended = matches!(process, StepProcess::Supervised { ended: Some(_), .. });
                let mut early = [Vec::new(), Vec::new()];
                let [early_out, early_err] = &mut early;
                let receivers = pipe_receiver(out_r, ended, early_out).and_then(|out| {
                    let err = match err_r {
                        Some(fd) => pipe_receiver(fd, ended, early_err)?,
                        None => None,
                    };
                    Ok((out, err))
                });
                return match receivers {
                    Ok((stdout, stderr)) => Ok(Started {
                        process,
                        stdout,
                        stderr,
                        early,
                        started_ms,
                        group,
                    }),
                    // Dropping `group` SIGKILLs the process.
                    Err(e) => Err(format!("cannot read the step's output: {e}")),
                };
            }
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < TEXT_BUSY_RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(spawn_error(&invocation, task, &e)),
        }
    }
}

/// The message for a process that would not start, naming what to fix.
fn spawn_error(invocation: &Invocation, task: &StepTask, e: &io::Error) -> String {
    let p = &invocation.program;
    match (invocation.role, e.kind()) {
        (Role::Program, io::ErrorKind::NotFound) => {
            format!("program \"{p}\" not found; check the step's command or PATH")
        }
        (Role::Shell, io::ErrorKind::NotFound) => {
            format!("shell \"{p}\" not found; check the step's shell or install it on the worker")
        }
        (Role::Script, io::ErrorKind::NotFound) => {
            let line = task
                .script
                .as_deref()
                .and_then(|s| s.lines().next())
                .unwrap_or_default();
            format!(
                "the interpreter named by the script's first line \"{line}\" was not found; fix that line or install the interpreter on the worker"
            )
        }
        (_, io::ErrorKind::PermissionDenied) => format!(
            "program \"{p}\" cannot be executed (permission denied); check the step's command and that the file is executable"
        ),
        _ if e.raw_os_error() == Some(nix::libc::E2BIG) => {
            // Linux refuses one argument or environment string over MAX_ARG_STRLEN (128 KiB),
            // and the whole of them over a quarter of the stack limit: name the biggest.
            let biggest = task
                .env
                .iter()
                .max_by_key(|(name, value)| name.len() + value.len())
                .map(|(name, value)| format!("{name} ({} bytes)", value.len()))
                .unwrap_or_default();
            format!(
                "cannot start program \"{p}\": {e}: its environment or arguments are too big \
                 for Linux (at most 131072 bytes per variable); the biggest variable is \
                 {biggest}: pass large data through a file instead of an output or param"
            )
        }
        _ => format!("cannot start program \"{p}\": {e}"),
    }
}

/// Chooses what to execute for the step:
///
/// * a `command` without an explicit `shell` and without shell syntax
///   ([`vars::needs_shell`]) is split into words (shell-words: quotes and backslashes as in
///   sh), `$VAR`, `${VAR}`, `$1`.. are expanded in each word, and the program runs directly.
///   Each word stays exactly one argument whatever the expansion yields (never split, globbed
///   or parsed again; unlike sh, a word that expands to nothing stays one empty argument);
/// * any other `command` runs as `<shell> -c <command> <dag name> <args...>` (the step's
///   `shell` with its own flags, or the worker's default, [`crate::env::DefaultShell`]);
/// * a `script` that starts with `#!` is written to [`AttemptPaths::script`] (mode 0755) and
///   executed with the args; any other runs as `<shell> -c <script> <dag name> <args...>`;
/// * a `command` with a `script` is the script's interpreter, as in Dagu:
///   `<command words...> <script file> <args...>`, or, when the command needs a shell,
///   `<shell> -c '<command> "$@"' <dag> <script file> <args...>`.
async fn invocation(
    task: &StepTask,
    paths: &AttemptPaths,
    env: &Env<'_>,
) -> Result<Invocation, String> {
    let command = task.command.as_deref().filter(|c| !c.trim().is_empty());
    let script = task.script.as_deref().filter(|s| !s.trim().is_empty());
    let explicit_shell = task.shell.as_deref().filter(|s| !s.trim().is_empty());
    let shell = || env.shell_words(explicit_shell);
    let through_shell = |code: &str, extra: &[String]| -> Result<Invocation, String> {
        let (program, mut args) = shell()?;
        args.push("-c".into());
        args.push(code.into());
        args.push(task.dag.clone());
        args.extend(extra.iter().cloned());
        Ok(Invocation {
            program,
            args,
            role: Role::Shell,
        })
    };
    let fast = |command: &str, extra: &[String]| -> Result<Invocation, String> {
        let words = shell_words::split(command)
            .map_err(|e| format!("the step's command does not parse: {e}; fix its quoting"))?;
        let mut words = words.iter().map(|w| vars::expand(w, |n| env.get(n)));
        let program = words
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| "the step's command names no program; give it one".to_string())?;
        let mut args: Vec<String> = words.collect();
        args.extend(extra.iter().cloned());
        Ok(Invocation {
            program,
            args,
            role: Role::Program,
        })
    };
    let direct = |command: &str| explicit_shell.is_none() && !vars::needs_shell(command);

    match (command, script) {
        (None, None) => Err("the step has neither a command nor a script; give it one".into()),
        (Some(command), None) if direct(command) => fast(command, &[]),
        (Some(command), None) => through_shell(command, &task.args),
        (None, Some(script)) if script.starts_with("#!") => {
            write_script(&paths.script, script).await?;
            Ok(Invocation {
                program: paths.script.display().to_string(),
                args: task.args.clone(),
                role: Role::Script,
            })
        }
        (None, Some(script)) => through_shell(script, &task.args),
        (Some(command), Some(script)) => {
            write_script(&paths.script, script).await?;
            let mut extra = vec![paths.script.display().to_string()];
            extra.extend(task.args.iter().cloned());
            if direct(command) {
                fast(command, &extra)
            } else {
                through_shell(&format!("{command} \"$@\""), &extra)
            }
        }
    }
}

/// Writes a script file, mode 0755, making the DAG's directory first (log files are made
/// lazily, so it may not exist yet). One hand-off to the blocking pool.
async fn write_script(path: &Path, script: &str) -> Result<(), String> {
    let (at, text) = (path.to_path_buf(), script.to_owned());
    let result = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&at)?;
        file.write_all(text.as_bytes())?;
        // The mode given to open is masked by the umask; the file must be executable.
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    result.map_err(|e| {
        format!(
            "cannot write the step's script to {}: {e}; check that the worker's --log-dir is writable",
            path.display()
        )
    })
}

impl Running {
    /// When the process started (ms since the epoch).
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The attempt's log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Publishes the step's tail with `write` while it runs, as [`LiveRule`] says; the last
    /// publication is awaited before [`Running::wait`] returns, so it
    /// never lands after the final report.
    pub(crate) fn with_live_tail(mut self, write: LiveWrite) -> Self {
        self.live = Some(write);
        self
    }

    /// The OS process id (also its process group id).
    #[cfg(test)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Streams the output to the log until the process exits and its pipes close (or
    /// [`PIPE_GRACE`] after the exit, when processes it left behind keep them open), then
    /// reports how it ended.
    ///
    /// When `stop` completes before the process exits, the step is stopped with
    /// [`stop_group`] (its stop signal, its cleanup grace, then SIGKILL), its output still
    /// logged meanwhile; the outcome then has [`Outcome::stopped`] set, no exit code, and the
    /// kind the cause calls for: `Failed` for [`StopCause::TimedOut`] and [`StopCause::Lost`],
    /// `Released` for [`StopCause::Released`]. A `stop` that never completes lets the step run
    /// to its end.
    pub(crate) async fn wait(mut self, stop: impl Future<Output = StopCause>) -> Outcome {
        let held = matches!(self.log, LazyLog::Pending { .. });
        let mut sink = Sink {
            log: self.log,
            hold_until: held.then(|| Instant::now() + LOG_HOLD),
            log_error: None,
            written: 0,
            tail: Vec::new(),
            stdout: self.output.as_ref().map(|_| Vec::new()),
            stdout_limit: self.output_limit,
            stdout_overflow: false,
        };
        let live = self.live.take();
        let mut rule = LiveRule::new(Instant::now());
        let mut publishing: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let [early_out, early_err] = std::mem::take(&mut self.early);
        if !early_out.is_empty() {
            sink.write(&early_out, true).await;
        }
        if !early_err.is_empty() {
            sink.write(&early_err, false).await;
        }
        let mut out = self.stdout.take();
        let mut err = self.stderr.take();
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let mut exit: Option<io::Result<ExitStatus>> = None;
        let mut grace_until: Option<Instant> = None;
        tokio::pin!(stop);
        let mut cause: Option<StopCause> = None;
        let mut stopping: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        let mut killed = false;
        loop {
            if exit.is_some() && out.is_none() && err.is_none() && stopping.is_none() {
                break;
            }
            tokio::select! {
                c = &mut stop, if cause.is_none() && exit.is_none() => {
                    // A process that already ended (its worker was frozen, say, while it
                    // exited) is not stopped: it is reported as it ended.
                    if let Some(status) = self.process.try_wait() {
                        exit = Some(status);
                        grace_until = Some(Instant::now() + PIPE_GRACE);
                        continue;
                    }
                    cause = Some(c);
                    if let StopCause::Fenced { grace, .. } = c {
                        self.cleanup = self.cleanup.min(grace);
                    }
                    stopping = Some(Box::pin(stop_group(
                        self.group.pgid,
                        self.stop_signal,
                        self.cleanup,
                    )));
                }
                k = async { stopping.as_mut().expect("guarded").await }, if stopping.is_some() => {
                    killed = k;
                    stopping = None;
                }
                // Only while the process runs and the output grew: a silent step, or one
                // whose process ended (its final report comes next), arms no timer.
                _ = tokio::time::sleep_until(rule.due),
                    if live.is_some() && publishing.is_none() && exit.is_none() && rule.armed(sink.written) =>
                {
                    if rule.take(Instant::now(), sink.written) {
                        // Still running after the hold: its log file is made now.
                        sink.spill().await;
                        let write = live.as_ref().expect("guarded");
                        publishing = Some(write(live_tail(&sink.tail), sink.written));
                    }
                }
                () = async { publishing.as_mut().expect("guarded").await }, if publishing.is_some() => {
                    publishing = None;
                }
                r = read_from(&mut out, &mut out_buf), if out.is_some() => match r {
                    Ok(n) if n > 0 => sink.write(&out_buf[..n], true).await,
                    _ => out = None,
                },
                r = read_from(&mut err, &mut err_buf), if err.is_some() => match r {
                    Ok(n) if n > 0 => sink.write(&err_buf[..n], false).await,
                    _ => err = None,
                },
                status = self.process.wait(), if exit.is_none() => {
                    exit = Some(status);
                    grace_until = Some(Instant::now() + PIPE_GRACE);
                }
                // Never while the group is being stopped: dropping the stop would spare the
                // processes still running.
                _ = tokio::time::sleep_until(grace_until.unwrap_or_else(Instant::now)),
                    if grace_until.is_some() && stopping.is_none() =>
                {
                    tracing::warn!(
                        log = %self.log_path.display(),
                        "the step's process exited but processes it started still hold its output open; reporting the step without waiting for them"
                    );
                    break;
                }
            }
        }
        self.group.ended();
        let finished_ms = now_ms();
        if let Some(publication) = publishing {
            publication.await;
        }
        let ran_past_hold = sink.hold_until.is_some_and(|until| Instant::now() >= until);
        let stopped = cause.map(|cause| Stopped {
            cause,
            signal: self.stop_signal,
            grace: self.cleanup,
            killed,
        });

        let (mut kind, exit_code, mut error) = match (stopped, exit) {
            (Some(s), _) => (
                match s.cause {
                    StopCause::Released => ReportKind::Released,
                    StopCause::TimedOut(_) | StopCause::Lost | StopCause::Fenced { .. } => {
                        ReportKind::Failed
                    }
                },
                None,
                Some(s.describe()),
            ),
            (None, Some(Ok(status))) => match (status.code(), status.signal()) {
                (Some(0), _) => (ReportKind::Succeeded, Some(0), None),
                (Some(code), _) => (
                    ReportKind::Failed,
                    Some(code),
                    Some(format!("exited with code {code}")),
                ),
                (None, Some(sig)) => (
                    ReportKind::Failed,
                    None,
                    Some(format!("killed by signal {sig}{}", signal_name(sig))),
                ),
                (None, None) => (
                    ReportKind::Failed,
                    None,
                    Some(format!("ended abnormally: {status}")),
                ),
            },
            (None, Some(Err(e))) => (
                ReportKind::Failed,
                None,
                Some(format!("lost track of the step's process: {e}")),
            ),
            // Not reached: the loop ends only after the exit was seen.
            (None, None) => (
                ReportKind::Failed,
                None,
                Some("lost track of the step's process".to_string()),
            ),
        };
        let mut output = None;
        if let (Some(name), Some(stdout)) = (self.output, sink.stdout.take()) {
            if sink.stdout_overflow {
                if kind == ReportKind::Succeeded {
                    kind = ReportKind::Failed;
                    // Dagu's message ("failed to capture output: output exceeded maximum size
                    // limit of N bytes"), then the fix.
                    error = Some(format!(
                        "failed to capture output: output exceeded maximum size limit of {} bytes (maxOutputSize; the output variable {name}); raise maxOutputSize, or write large data to a file and output its path",
                        sink.stdout_limit
                    ));
                }
            } else if kind == ReportKind::Succeeded {
                output = Some((name, String::from_utf8_lossy(&stdout).trim().to_string()));
            }
        }
        // Output still held: a step that ran past the hold (silent since) gets its file as any
        // long step does, and so does a failed attempt, whose log must outlive its tail in
        // Redis (the next attempt's replaces it). Only a short, small, successful attempt (or
        // one handed back, which runs again under its number) keeps none.
        if ran_past_hold || kind == ReportKind::Failed {
            sink.spill().await;
        }
        if let Err(e) = sink.log.flush().await {
            sink.log_error.get_or_insert(e);
        }
        if let Some(e) = &sink.log_error {
            tracing::warn!(log = %self.log_path.display(), cause = %e, "could not write the step's full log");
        }
        if kind == ReportKind::Released && matches!(sink.log, LazyLog::Open(_)) {
            // The attempt is handed back and runs again under the same number, writing the
            // same file: this execution's lines must not be taken for that one's (the next
            // execution appends, or writes nothing). Rare (a shutdown's grace ran out).
            let path = self.log_path.clone();
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
            if let Ok(Err(e)) = removed {
                tracing::debug!(log = %self.log_path.display(), cause = %e, "could not remove the released attempt's log");
            }
        }
        Outcome {
            kind,
            started_ms: self.started_ms,
            finished_ms,
            exit_code,
            error,
            output,
            tail: finish_tail(sink.tail),
            written: sink.written,
            log_path: self.log_path,
            stopped,
        }
    }
}

/// Stops the process group `pgid` (the pid of its leader, spawned with `process_group(0)`):
/// sends it `signal` (`killpg`), waits up to `grace` for every process of the group to exit
/// (checking every [`STOP_POLL`]; zombies count as exited), then sends SIGKILL to whatever is
/// left. Returns true when SIGKILL was sent to processes still running. Used for timeouts,
/// lost claims and the end of the shutdown grace.
///
/// The leader must keep being reaped meanwhile (a `Child::wait` in flight, or the step
/// supervisor, which reaps at once), or its zombie would count as running on systems without
/// `/proc`.
pub(crate) async fn stop_group(pgid: Pid, signal: Signal, grace: Duration) -> bool {
    match killpg(pgid, signal) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return false,
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), signal = signal.as_str(), cause = %e, "cannot signal the step's process group");
        }
    }
    if signal == Signal::SIGKILL {
        return false;
    }
    let deadline = Instant::now() + grace;
    while group_alive(pgid) {
        let now = Instant::now();
        if now >= deadline {
            return match killpg(pgid, Signal::SIGKILL) {
                Ok(()) => true,
                Err(Errno::ESRCH) => false,
                Err(e) => {
                    tracing::error!(pgid = pgid.as_raw(), cause = %e, "cannot SIGKILL the step's process group");
                    false
                }
            };
        }
        tokio::time::sleep(STOP_POLL.min(deadline - now)).await;
    }
    false
}

/// True while a process of group `pgid` runs: `killpg(pgid, 0)` finds one and, where `/proc`
/// is readable, one of them is not a zombie (a zombie whose parent does not reap it, as under
/// an init that reaps nothing, would otherwise look alive until the grace ends).
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let mut seen_any = false;
    for (_, stat) in processes() {
        seen_any = true;
        if stat.pgrp == pgid.as_raw() && stat.running() {
            return true;
        }
    }
    // Nothing readable under /proc (not Linux, or hidden): trust killpg.
    !seen_any
}

/// What dagrid reads of a process in `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Its state letter (`R`, `S`, `Z`…).
    pub(crate) state: char,
    /// Its parent's pid.
    pub(crate) ppid: i32,
    /// Its process group.
    pub(crate) pgrp: i32,
    /// Its session.
    pub(crate) session: i32,
}

impl ProcStat {
    /// Neither a zombie nor dead.
    pub(crate) fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// The fields of a `/proc/<pid>/stat` line (`pid (comm) state ppid pgrp session …`, where
/// comm may hold spaces and parentheses).
pub(crate) fn parse_stat(stat: &str) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        session,
    })
}

/// Every process `/proc` shows with a readable `stat`, by pid; none where there is no `/proc`.
pub(crate) fn processes() -> impl Iterator<Item = (i32, ProcStat)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
}

/// Process groups of the step processes of this process (every worker in it), by pgid.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A step's process group, listed in [`GROUPS`] from its spawn until [`Group::ended`]. Dropped
/// before that (its step task was dropped), it SIGKILLs the group.
#[derive(Debug)]
struct Group {
    pgid: Pid,
    listed: bool,
}

impl Group {
    fn register(pid: u32) -> Self {
        let pgid = Pid::from_raw(pid as i32);
        groups().insert(pgid.as_raw());
        Self { pgid, listed: true }
    }

    /// The step ended (its leader reaped, and the group stopped if it was being stopped).
    fn ended(&mut self) {
        if std::mem::take(&mut self.listed) {
            groups().remove(&self.pgid.as_raw());
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.listed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
            self.ended();
        }
    }
}

fn groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs the process group of every step running in this process, at once and without a
/// grace; returns how many groups were signalled. For a process that must exit now (a second
/// SIGINT or SIGTERM), so no step process outlives it; the steps' ready entries stay pending
/// and are reclaimed by a coordinator once this worker's heartbeat is older than the lease.
pub(crate) fn kill_all_groups() -> usize {
    let groups = groups();
    for &pgid in groups.iter() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    groups.len()
}

/// ` (SIGKILL)` for 9, and so on; empty for a number that names no signal.
fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default()
}

/// The read end `fd` of a step's pipe (non-blocking, made by [`output_pipe`]) as a receiver
/// registered with the runtime; or, when the step already `ended`, read here to its end into
/// `early` without waiting and without registering it (`None`). A pipe a process the step
/// left behind still holds open (no end of file yet), or more than [`READ_CHUNK`] × 16 bytes,
/// is registered after what was read.
fn pipe_receiver(
    fd: OwnedFd,
    ended: bool,
    early: &mut Vec<u8>,
) -> io::Result<Option<pipe::Receiver>> {
    if ended {
        let mut chunk = [0u8; 4096];
        while early.len() < READ_CHUNK * 16 {
            match nix::unistd::read(&fd, &mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => early.extend_from_slice(&chunk[..n]),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }
    pipe::Receiver::from_owned_fd_unchecked(fd).map(Some)
}

/// A pipe for a step's output: its read end non-blocking (for the runtime) and its write end
/// blocking (for the step), both close-on-exec. One `pipe2` and one `fcntl`, where a std pipe
/// and tokio's checked conversion of its read end take four system calls.
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((read, write))
}

/// One read from a step's pipe into `buf`, which is allocated ([`FIRST_READ`] bytes) once the
/// pipe is first readable and doubled (up to [`READ_CHUNK`]) after a read that filled it;
/// never completes once the pipe is gone (`None`). Cancel-safe, as `select!` needs: a read
/// dropped before it completes has consumed nothing.
async fn read_from(pipe: &mut Option<pipe::Receiver>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let Some(p) = pipe else {
        return std::future::pending().await;
    };
    if buf.is_empty() {
        p.readable().await?;
        buf.resize(FIRST_READ, 0);
    }
    let n = p.read(buf).await?;
    if n == buf.len() && buf.len() < READ_CHUNK {
        // Keeps the bytes just read (the caller takes `buf[..n]`).
        buf.resize((buf.len() * 2).min(READ_CHUNK), 0);
    }
    Ok(n)
}

/// An attempt's log file, created when the output held in memory spills ([`LOG_HOLD`]: past
/// [`TAIL_BYTES`] or one second), or before the start for a step that names it
/// ([`LazyLog::open_fresh`]): a step that writes nothing, or little and briefly, like most
/// short steps, costs no directory and no file, which on a journalled file system are the
/// most expensive part of running it.
#[derive(Debug)]
enum LazyLog {
    /// Not created yet: the DAG's directory and the log file's path.
    Pending {
        dir: PathBuf,
        path: PathBuf,
    },
    Open(File),
}

/// Why an attempt's log file could not be created.
#[derive(Debug)]
enum LogCreateError {
    /// The DAG's directory (`<log dir>/<dag>`).
    Dir(PathBuf, io::Error),
    /// The log file itself.
    File(PathBuf, io::Error),
}

impl std::fmt::Display for LogCreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogCreateError::Dir(path, e) => write!(
                f,
                "cannot create the log directory {}: {e}; check that the worker's --log-dir is writable",
                path.display()
            ),
            LogCreateError::File(path, e) => write!(
                f,
                "cannot create the log file {}: {e}; check that the worker's --log-dir is writable",
                path.display()
            ),
        }
    }
}

impl LazyLog {
    fn new(paths: &AttemptPaths) -> Self {
        LazyLog::Pending {
            dir: paths.dir.clone(),
            path: paths.log.clone(),
        }
    }

    /// Creates the DAG's directory and the log file unless done already. Both in one hand-off
    /// to the blocking pool (not two tokio::fs calls): off the runtime's thread, so a slow
    /// disk never stalls heartbeats, lease refreshes and the self-fencing timer (a stalled
    /// worker would have its step reclaimed and run elsewhere while its process still runs).
    async fn open(&mut self) -> Result<&mut File, LogCreateError> {
        self.open_with(false).await
    }

    /// Creates the file empty (a file left by an earlier execution of the same attempt goes),
    /// before the process starts.
    async fn open_fresh(&mut self) -> Result<&mut File, LogCreateError> {
        self.open_with(true).await
    }

    async fn open_with(&mut self, truncate: bool) -> Result<&mut File, LogCreateError> {
        if let LazyLog::Pending { dir, path } = self {
            let (dir, path) = (dir.clone(), path.clone());
            let made = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| LogCreateError::Dir(dir, e))?;
                // Appending: a step may write its own lines to `$DAG_RUN_LOG_FILE` (before
                // its first byte of output, or between two), and they must stay.
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path);
                let file = match (file, truncate) {
                    (Ok(f), true) => f.set_len(0).map(|()| f),
                    (file, _) => file,
                };
                file.map_err(|e| LogCreateError::File(path, e))
            })
            .await
            .unwrap_or_else(|e| {
                Err(LogCreateError::File(
                    PathBuf::new(),
                    std::io::Error::other(e),
                ))
            })?;
            *self = LazyLog::Open(File::from_std(made));
        }
        match self {
            LazyLog::Open(file) => Ok(file),
            LazyLog::Pending { .. } => unreachable!("created above"),
        }
    }

    /// Appends `bytes`, creating the file first when needed.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .open()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        file.write_all(bytes).await
    }

    /// Flushes the file, if it was created.
    async fn flush(&mut self) -> io::Result<()> {
        match self {
            LazyLog::Open(file) => file.flush().await,
            LazyLog::Pending { .. } => Ok(()),
        }
    }
}

/// Whether the step names its own log file (`DAG_RUN_LOG_FILE`, `DAG_RUN_STEP_STDOUT_FILE`) in
/// its command, script, shell, args, env or dir: then the file is created before the process
/// starts, so the step finds it even before it writes anything.
fn names_its_log(task: &StepTask) -> bool {
    let names =
        |text: &str| text.contains("DAG_RUN_LOG_FILE") || text.contains("DAG_RUN_STEP_STDOUT_FILE");
    [&task.command, &task.script, &task.shell, &task.dir]
        .into_iter()
        .flatten()
        .any(|t| names(t))
        || task.args.iter().any(|a| names(a))
        || task.env.iter().any(|(_, v)| names(v))
}

/// How long a step's output is held in memory before its log file is made (1 s, the
/// [`LIVE_TAIL_INTERVAL`]). A step that succeeds within it having written at most
/// [`TAIL_BYTES`] gets no log file: its whole output is the tail its final report stores in
/// Redis, which `dagrid logs` and the UI show (a failed attempt gets its file at its end: its
/// tail is replaced by the next attempt's). Creating a file is the dearest part of a short step that
/// prints (on ext4 with many recently deleted files, 0.6 ms of system time here, more than
/// running `/bin/true`), and most batch steps are short and print a little.
pub(crate) const LOG_HOLD: Duration = LIVE_TAIL_INTERVAL;

/// Where a step's output goes.
struct Sink {
    log: LazyLog,
    /// Until when output is held in memory without a log file ([`LOG_HOLD`] after the start);
    /// `None` once the file is made (or was made before the start).
    hold_until: Option<Instant>,
    /// The first error writing the log; later writes are skipped.
    log_error: Option<io::Error>,
    /// Total bytes of output so far (what the log holds when every write succeeded).
    written: u64,
    tail: Vec<u8>,
    /// Captured stdout, when the step has an `output` variable.
    stdout: Option<Vec<u8>>,
    /// The most bytes `stdout` keeps (the DAG's `maxOutputSize`).
    stdout_limit: usize,
    stdout_overflow: bool,
}

impl Sink {
    async fn write(&mut self, bytes: &[u8], is_stdout: bool) {
        let total = self.written + bytes.len() as u64;
        let hold = self
            .hold_until
            .is_some_and(|until| total <= TAIL_BYTES as u64 && Instant::now() < until);
        if !hold {
            self.spill().await;
            if self.log_error.is_none() {
                if let Err(e) = self.log.write(bytes).await {
                    self.log_error = Some(e);
                }
            }
        }
        self.written += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
        if let (true, Some(stdout)) = (is_stdout, self.stdout.as_mut()) {
            let room = self.stdout_limit.saturating_sub(stdout.len());
            if bytes.len() > room {
                self.stdout_overflow = true;
            }
            stdout.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Ends the hold ([`LOG_HOLD`]): makes the log file and writes the output held so far
    /// (all of it: at most [`TAIL_BYTES`], which the tail keeps whole). Nothing when the file
    /// exists already.
    async fn spill(&mut self) {
        if self.hold_until.take().is_none() || self.written == 0 || self.log_error.is_some() {
            return;
        }
        if let Err(e) = self.log.write(&self.tail).await {
            self.log_error = Some(e);
        }
    }
}

/// A copy of the last [`TAIL_BYTES`] of the output so far, as [`finish_tail`] cuts it.
fn live_tail(tail: &[u8]) -> Vec<u8> {
    // A few bytes more, so finish_tail can see a sequence cut at the start.
    let from = tail.len().saturating_sub(TAIL_BYTES + 4);
    finish_tail(tail[from..].to_vec())
}

/// The last [`TAIL_BYTES`] of the output, without a UTF-8 sequence cut in half at its start.
fn finish_tail(mut tail: Vec<u8>) -> Vec<u8> {
    if tail.len() > TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
        let cut = tail
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        tail.drain(..cut);
    }
    tail
}

#[cfg(test)]
pub(crate) mod tests;
