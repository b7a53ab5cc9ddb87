//! The worker's command line, parsed here once for both ways of starting a worker: the small
//! `dagrid-worker` binary ([`main`]) and `dagrid worker`, which flattens [`WorkerCommand`] and
//! execs `dagrid-worker` when it sits next to it. Every flag has its `DAGRID_*` variable.
//! Also the lean process setup of a worker: its runtime, its logging and its signals.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use dagrid_shared::Redis;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;

/// The name of the worker binary, which `dagrid worker` looks for next to its own.
pub const BINARY: &str = "dagrid-worker";

/// Most threads a worker's runtime starts for blocking work (step log files, tokio::fs); more
/// blocking calls wait for one.
const BLOCKING_THREADS: usize = 4;

/// Log output format of the services (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, fields, target, spans).
    Json,
}

/// Which Redis and which namespace in it (the coordinator's flags too).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[user:password@]host:port[/db]`).
    #[arg(
        long,
        env = "DAGRID_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Namespace: every key lives under the hash tag `{<namespace>}`.
    #[arg(long, env = "DAGRID_NAMESPACE", default_value = "dagrid")]
    pub namespace: String,
}

/// Settings of the workers (`dagrid worker`, `dagrid-worker`, and the workers of
/// `dagrid start-all`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WorkerArgs {
    /// Steps each worker runs at once.
    #[arg(long, env = "DAGRID_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Directory for full step logs (`<dir>/<dag>/<run>.<step>.<attempt>.log`).
    #[arg(long, env = "DAGRID_LOG_DIR", default_value_os_t = std::env::temp_dir().join("dagrid-logs"))]
    pub log_dir: PathBuf,
    /// Interval between heartbeats, e.g. `1s`; keep it several times shorter than the
    /// coordinators' --lease-timeout (10s), after which a silent worker's steps run elsewhere.
    /// Each heartbeat also refreshes the worker's claims on its running steps, so a step
    /// reclaimed from it or whose run was stopped is stopped within one interval.
    #[arg(long, env = "DAGRID_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// At shutdown (SIGINT/SIGTERM), how long running steps may go on to finish, e.g. `30s`;
    /// then they are stopped (their stop signal, their cleanup grace, SIGKILL) and handed back
    /// to run again elsewhere. A second signal kills them and exits at once.
    #[arg(long, env = "DAGRID_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Whether no process of a step may outlive its worker: steps are then spawned by a small
    /// step supervisor process per worker, which SIGKILLs every step's process group and
    /// every process they left (grandchildren included) when the worker dies by any signal.
    /// `false`: the worker spawns steps itself and nothing kills them if it dies (under
    /// systemd or Kubernetes the worker's cgroup then does).
    #[arg(long, env = "DAGRID_STEPS_DIE_WITH_WORKER", default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub steps_die_with_worker: bool,
    /// Serve the worker's health endpoints on this address, e.g. `0.0.0.0:9091`:
    /// `/health/live`, `/health/ready` (503 when Redis is unreachable, the claim loop is
    /// stalled or the worker is draining) and `/metrics`. Off by default. In `start-all` the
    /// listener reports the first worker (metrics are process-wide).
    #[arg(long, env = "DAGRID_WORKER_HEALTH_ADDR", value_name = "HOST:PORT")]
    pub health_addr: Option<std::net::SocketAddr>,
    /// Steps inherit only the worker's environment variables whose name matches one of these
    /// glob patterns (`PATH`, `AWS_*`); repeatable, or comma-separated
    /// (DAGRID_STEP_ENV_ALLOW=PATH,HOME,LANG). Default: every variable. Include PATH and HOME.
    /// DAGRID_* variables and the worker's secrets never reach a step, whatever this says.
    #[arg(
        long = "step-env-allow",
        env = "DAGRID_STEP_ENV_ALLOW",
        value_name = "PATTERN",
        value_delimiter = ',',
        value_parser = parse_env_pattern
    )]
    pub step_env_allow: Vec<String>,
    /// Steps never inherit the worker's environment variables whose name matches one of these
    /// glob patterns (`AWS_*`); applied after --step-env-allow. Repeatable, or comma-separated
    /// (DAGRID_STEP_ENV_DENY).
    #[arg(
        long = "step-env-deny",
        env = "DAGRID_STEP_ENV_DENY",
        value_name = "PATTERN",
        value_delimiter = ',',
        value_parser = parse_env_pattern
    )]
    pub step_env_deny: Vec<String>,
    /// A label of this worker, `key=value` (repeatable, or comma-separated in
    /// DAGRID_WORKER_LABELS=gpu=true,region=eu). A DAG with a `workerSelector` runs only on
    /// workers whose labels contain every pair of it; a worker runs the DAGs without one too.
    /// Keys: letters, digits, `.`, `_`, `/`, `-` (up to 63); values likewise, may be empty.
    #[arg(
        long = "label",
        env = "DAGRID_WORKER_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_label
    )]
    pub labels: Vec<(String, String)>,
}

/// Everything `dagrid worker` and `dagrid-worker` take besides the log format.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: RedisArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub worker: WorkerArgs,
    /// The coordinators' --lease-timeout (default 10s; the same variable sets both): a
    /// step whose lease this worker could not renew for that long minus a margin (a
    /// quarter, at most 2s), Redis being unreachable, is stopped (SIGKILL within half the
    /// margin) and not reported, before a coordinator may run it elsewhere.
    #[arg(long, env = "DAGRID_LEASE_TIMEOUT", value_name = "DURATION", value_parser = dagrid_shared::duration::parse_lease_timeout)]
    pub lease_timeout: Option<Duration>,
}

/// `dagrid-worker`: the worker alone, in a binary a third the size of `dagrid`.
#[derive(Debug, Parser)]
#[command(
    name = "dagrid-worker",
    version,
    about = "Run a dagrid worker: claims steps from Redis and runs them as processes (the same flags as `dagrid worker`)."
)]
pub struct WorkerCli {
    /// Log output format (on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DAGRID_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Taken and ignored, as `dagrid worker` takes its global --token (services need none).
    #[arg(long, env = "DAGRID_TOKEN", hide = true, hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub command: WorkerCommand,
}

/// A `--step-env-allow` / `--step-env-deny` pattern: a glob over variable names.
/// One `--label key=value`, checked as [`dagrid_shared::labels::Labels`] checks it.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let mut one = dagrid_shared::labels::Labels::new();
    one.insert_pair(s).map_err(|e| e.to_string())?;
    let (k, v) = one.iter().next().expect("one pair inserted");
    Ok((k.to_string(), v.to_string()))
}

fn parse_env_pattern(s: &str) -> Result<String, String> {
    let pattern = s.trim();
    glob::Pattern::new(pattern)
        .map(|_| pattern.to_string())
        .map_err(|e| {
            format!(
                "{pattern:?} is not a glob ({}); write a name or a pattern such as AWS_*",
                e.msg
            )
        })
}

impl WorkerArgs {
    /// The worker's [`Config`]. `index` numbers the workers of one process (`start-all`), whose
    /// ids must differ and of which only the first serves `--health-addr`; `secrets` are the
    /// values no step may inherit; `lease` the coordinators' lease (`None`: their default,
    /// 10 s); `supervisor` the step supervisor program ([`Config::supervisor_program`]).
    pub fn config(
        &self,
        index: Option<u32>,
        secrets: Vec<String>,
        lease: Option<Duration>,
        supervisor: Option<PathBuf>,
    ) -> Config {
        let defaults = Config::default();
        let mut config = Config {
            concurrency: self.concurrency as usize,
            log_dir: self.log_dir.clone(),
            heartbeat_interval: self.heartbeat_interval,
            shutdown_grace: self.shutdown_grace,
            steps_die_with_worker: self.steps_die_with_worker,
            supervisor_program: supervisor,
            lease_timeout: lease.or(defaults.lease_timeout),
            worker_id: None,
            health_addr: self.health_addr.filter(|_| index.unwrap_or(0) == 0),
            step_env: crate::StepEnv {
                allow: self.step_env_allow.clone(),
                deny: self.step_env_deny.clone(),
                secrets,
            },
            labels: self.labels.clone(),
        };
        if let Some(i) = index {
            config.worker_id = Some(format!("{}-w{i}", crate::worker_id(&config)));
        }
        config
    }
}

/// The secret parts of a Redis URL that no step may inherit: the URL itself and its password
/// (`redis://user:password@host`, or the `pass` query parameter that redis-rs reads for a unix
/// socket, `unix:///run/redis.sock?pass=…`; `password` is taken too), as written and decoded
/// (percent-decoded; a query value also form-decoded, `+` as a space, as redis-rs reads it).
pub fn redis_secrets(url: &str) -> Vec<String> {
    let mut secrets = vec![url.to_string()];
    let mut add = |password: &str| {
        if !password.is_empty() {
            secrets.push(password.to_string());
            let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            if decoded != password {
                secrets.push(decoded.into_owned());
            }
        }
    };
    let rest = url.split_once("://").map(|(_, rest)| rest);
    let authority = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(rest));
    if let Some((userinfo, _host)) = authority.and_then(|a| a.rsplit_once('@')) {
        add(userinfo.split_once(':').map_or(userinfo, |(_, p)| p));
    }
    let query = rest
        .and_then(|r| r.split_once('?'))
        .map(|(_, q)| q.split('#').next().unwrap_or(q));
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some(("pass" | "password", p)) = pair.split_once('=') {
            add(p);
            let form = p.replace('+', " ");
            if form != p {
                add(&form);
            }
        }
    }
    secrets
}

/// The program this process runs as its step supervisor: this very binary, by
/// `/proc/self/exe` where it exists (the same file even after an upgrade replaced the one on
/// disk), else its path.
pub fn self_program() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from(BINARY))
}

/// The argument that makes `dagrid-worker` print its [`BUILD`] and exit.
pub const BUILD_ARG: &str = "__build";

/// What `dagrid` and the `dagrid-worker` it execs (or uses as step supervisor) must share: the
/// worker crate's version, and `DAGRID_BUILD_ID` when the build set it (e.g. a commit id), so a
/// stale `dagrid-worker` left next to a newer `dagrid` is not used.
pub const BUILD: &str = match option_env!("DAGRID_BUILD_ID") {
    Some(id) => id,
    None => env!("CARGO_PKG_VERSION"),
};

/// The `dagrid-worker` file next to this process's executable, if there is one that can be
/// executed and is of this build ([`BUILD`]: it is run once with [`BUILD_ARG`] to ask).
/// `None` otherwise, with the reason logged at warn when a file is there but not usable.
pub fn sibling_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let sibling = exe.with_file_name(BINARY);
    if sibling == exe || !sibling.is_file() {
        return None;
    }
    match std::process::Command::new(&sibling).arg(BUILD_ARG).output() {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == BUILD => {
            Some(sibling)
        }
        Ok(out) => {
            tracing::warn!(
                binary = %sibling.display(),
                build = %String::from_utf8_lossy(&out.stdout).trim(),
                expected = BUILD,
                "the worker binary next to this one is of another build; not using it"
            );
            None
        }
        Err(e) => {
            tracing::warn!(binary = %sibling.display(), cause = %e, "cannot run the worker binary next to this one; not using it");
            None
        }
    }
}

/// The async runtime of a worker: one thread. Its steps are processes of their own and its
/// loops (claim, reports, heartbeat, the steps' output) mostly wait, so more threads only
/// add memory (a stack and a malloc arena each); the blocking pool is capped at
/// [`BLOCKING_THREADS`].
///
/// # Errors
/// When the runtime cannot start (no thread or no epoll instance).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// Logs to stderr as `format` says, filtered by `RUST_LOG` (default: `default`, e.g. `info`).
pub fn init_tracing(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A token cancelled on the first SIGINT/SIGTERM; the second exits the process at once (130),
/// after SIGKILLing the process groups of the steps this process runs so none outlives it.
/// Those steps send no report: their ready entries stay pending and a coordinator reclaims
/// them once this process's workers' heartbeats are older than the lease.
pub fn shutdown_on_signal(tracker: &TaskTracker) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tracker.spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down (a second signal exits at once)");
        t.cancel();
        wait_signal().await;
        let killed = crate::kill_running_steps();
        tracing::warn!(
            steps_killed = killed,
            "second signal: exiting now; the killed steps are re-queued once this worker's lease expires"
        );
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs one worker as `command` says until SIGINT/SIGTERM (`dagrid worker`, `dagrid-worker`),
/// with `supervisor` as its step supervisor program.
///
/// # Errors
/// A bad Redis URL, or what [`crate::run`] returns.
pub async fn run(command: &WorkerCommand, supervisor: PathBuf) -> Result<(), crate::Error> {
    let redis = Redis::open(&command.redis.redis_url, &command.redis.namespace)
        .map_err(crate::Error::Redis)?;
    let tracker = TaskTracker::new();
    let shutdown = shutdown_on_signal(&tracker);
    // Logs risky Redis settings (eviction, no persistence); never stops the worker.
    dagrid_shared::redis::server_check::warn_on_risky_settings(&redis).await;
    let config = command.worker.config(
        None,
        redis_secrets(&command.redis.redis_url),
        command.lease_timeout,
        Some(supervisor),
    );
    crate::run(redis, config, shutdown).await
}

/// The whole `dagrid-worker` program: a step supervisor when started as one, else a worker
/// on a current-thread runtime.
pub fn main() -> ExitCode {
    // `dagrid-worker __build`: which build this is (see `sibling_binary`).
    if std::env::args_os().nth(1).is_some_and(|a| a == BUILD_ARG) {
        println!("{BUILD}");
        return ExitCode::SUCCESS;
    }
    // `dagrid-worker __step-supervisor`: single-threaded, before anything.
    if let Some(code) = crate::supervisor::entry() {
        return code;
    }
    let cli = WorkerCli::parse();
    init_tracing(cli.log_format, "info");
    run_in_runtime(&cli.command, self_program())
}

/// Runs [`run`] on the worker's [`runtime`]; the exit code of a worker process.
pub fn run_in_runtime(command: &WorkerCommand, supervisor: PathBuf) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command, supervisor)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments of `dagrid ARGS` with the `worker` subcommand's name taken out, for
/// `dagrid-worker`: the global flags before it (`--log-format`, `--token`, which
/// `dagrid-worker` takes too) and every argument after it, unchanged. `None` when `worker` is
/// not the subcommand.
pub fn worker_args_of(dagrid_args: &[OsString]) -> Option<Vec<OsString>> {
    let mut i = 0;
    while i < dagrid_args.len() {
        let a = dagrid_args[i].to_str()?;
        match a {
            "worker" => {
                let mut out = dagrid_args[..i].to_vec();
                out.extend_from_slice(&dagrid_args[i + 1..]);
                return Some(out);
            }
            "--log-format" | "--token" => i += 2,
            _ if a.starts_with("--log-format=") || a.starts_with("--token=") => i += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_worker_subcommand_is_taken_out_and_everything_else_kept() {
        assert_eq!(
            worker_args_of(&os(&["worker", "--concurrency", "3"])),
            Some(os(&["--concurrency", "3"]))
        );
        assert_eq!(
            worker_args_of(&os(&[
                "--log-format",
                "json",
                "--token=t",
                "worker",
                "--log-dir",
                "worker"
            ])),
            Some(os(&[
                "--log-format",
                "json",
                "--token=t",
                "--log-dir",
                "worker"
            ]))
        );
        assert_eq!(
            worker_args_of(&os(&["--token", "worker", "worker"])),
            Some(os(&["--token", "worker"]))
        );
        assert_eq!(worker_args_of(&os(&["start-all", "worker"])), None);
        assert_eq!(worker_args_of(&os(&["--log-format", "json"])), None);
    }

    #[test]
    fn flags_reach_the_config_and_bad_ones_name_the_flag() {
        let cli = WorkerCli::try_parse_from([
            "dagrid-worker",
            "--concurrency",
            "200",
            "--heartbeat-interval",
            "500ms",
            "--step-env-allow",
            "PATH,HOME",
            "--lease-timeout",
            "20s",
        ])
        .unwrap();
        let c = &cli.command;
        let config = c.worker.config(None, vec![], c.lease_timeout, None);
        assert_eq!(config.concurrency, 200);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.lease_timeout, Some(Duration::from_secs(20)));
        assert_eq!(config.step_env.allow, ["PATH", "HOME"]);
        let defaults = WorkerCli::try_parse_from(["dagrid-worker"])
            .unwrap()
            .command;
        let config = defaults.worker.config(Some(1), vec![], None, None);
        assert_eq!(config.lease_timeout, Some(Duration::from_secs(10)));
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert!(config.worker_id.unwrap().ends_with("-w1"));
        for (flag, value) in [
            ("--concurrency", "0"),
            ("--lease-timeout", "500ms"),
            ("--step-env-deny", "AWS_["),
        ] {
            let e = WorkerCli::try_parse_from(["dagrid-worker", flag, value])
                .unwrap_err()
                .to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn labels_reach_the_config_and_bad_ones_name_the_flag_and_the_rule() {
        let cli = WorkerCli::try_parse_from([
            "dagrid-worker",
            "--label",
            "region=eu",
            "--label",
            "gpu=true,zone=",
        ])
        .unwrap();
        let config = cli.command.worker.config(None, vec![], None, None);
        assert_eq!(
            config.labels,
            [
                ("region".into(), "eu".into()),
                ("gpu".into(), "true".into()),
                ("zone".into(), "".into())
            ]
        );
        for (value, rule) in [
            ("gpu", "has no '=': write key=value"),
            ("a b=1", "label key \"a b\": use 1 to 63 letters"),
            ("=x", "starting with a letter or digit"),
            ("gpu=tr ue", "a value is at most 63 letters"),
        ] {
            let e = WorkerCli::try_parse_from(["dagrid-worker", "--label", value])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--label") && e.contains(rule), "{value}: {e}");
        }
    }

    #[test]
    fn redis_secrets_are_the_url_and_its_password() {
        assert_eq!(
            redis_secrets("redis://app:s%3Cret@db:6379/2"),
            ["redis://app:s%3Cret@db:6379/2", "s%3Cret", "s<ret"]
        );
        assert_eq!(redis_secrets("redis://:pw@h:1"), ["redis://:pw@h:1", "pw"]);
        assert_eq!(redis_secrets("redis://h:1/0"), ["redis://h:1/0"]);
        assert_eq!(redis_secrets("rediss://u@h:1"), ["rediss://u@h:1", "u"]);
        assert_eq!(redis_secrets("redis://:a%2@h"), ["redis://:a%2@h", "a%2"]);
        assert_eq!(
            redis_secrets("unix:///run/r.sock?db=1&pass=p%20w#x"),
            ["unix:///run/r.sock?db=1&pass=p%20w#x", "p%20w", "p w"]
        );
        assert_eq!(
            redis_secrets("redis+unix:///r.sock?password=pw"),
            ["redis+unix:///r.sock?password=pw", "pw"]
        );
        assert_eq!(
            redis_secrets("unix:///r.sock?db=2"),
            ["unix:///r.sock?db=2"]
        );
        assert_eq!(
            redis_secrets("unix:///r.sock?pass=a+b%2B"),
            [
                "unix:///r.sock?pass=a+b%2B",
                "a+b%2B",
                "a+b+",
                "a b%2B",
                "a b+"
            ]
        );
    }
}
