//! `dagrid`: the command line. Service verbs (`coordinator`, `worker`, `start-all`) run the
//! services; client verbs (`submit`, `batch`, `status`, `runs`, `logs`, `dags`, `register`,
//! `queues`, `queue`, `retry`) talk to a coordinator's HTTP API (`--server`, `DAGRID_SERVER`), never to
//! Redis; `health` probes a coordinator's or worker's readiness; `validate` checks DAG files
//! locally, and `dry` prints a DAG's plan (a file locally, a
//! registered DAG through the API).

mod batch;
mod client;
mod dry;
mod events;
mod format;
mod health;
mod logs;
mod options;
mod queues;
mod retry;
mod service_config;
mod services;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A distributed workflow engine: Dagu-format DAGs of shell steps, queued in Redis, run by
/// stateless workers.
#[derive(Debug, Parser)]
#[command(name = "dagrid", version, about)]
struct Cli {
    /// Log output format of the services (on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DAGRID_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    /// API token of the client verbs, sent as `Authorization: Bearer <token>`; needed when
    /// the coordinator has tokens configured (a read token for reads, admin for writes).
    /// Prefer DAGRID_TOKEN: a flag's value shows in the process list. Services ignore it.
    #[arg(
        long,
        env = "DAGRID_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, fields, target, spans).
    Json,
}

/// Where the coordinator's API is.
#[derive(Debug, Clone, Args)]
struct ServerArgs {
    /// Base URL of the coordinator's API.
    #[arg(long, env = "DAGRID_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
}

/// Which Redis and which namespace in it.
#[derive(Debug, Clone, Args)]
struct RedisArgs {
    /// Redis URL (`redis://[user:password@]host:port[/db]`).
    #[arg(
        long,
        env = "DAGRID_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Namespace: every key lives under the hash tag `{<namespace>}`.
    #[arg(long, env = "DAGRID_NAMESPACE", default_value = "dagrid")]
    namespace: String,
}

/// Settings of the workers.
#[derive(Debug, Clone, Args)]
struct WorkerArgs {
    /// Steps each worker runs at once.
    #[arg(long, env = "DAGRID_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Directory for full step logs (`<dir>/<dag>/<run>/<step>.<attempt>.log`).
    #[arg(long, env = "DAGRID_LOG_DIR", default_value_os_t = std::env::temp_dir().join("dagrid-logs"))]
    log_dir: PathBuf,
    /// Interval between heartbeats, e.g. `1s`; keep it several times shorter than the
    /// coordinators' --lease-timeout (10s), after which a silent worker's steps run elsewhere.
    /// Each heartbeat also refreshes the worker's claims on its running steps, so a step
    /// reclaimed from it or whose run was stopped is stopped within one interval.
    #[arg(long, env = "DAGRID_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: std::time::Duration,
    /// At shutdown (SIGINT/SIGTERM), how long running steps may go on to finish, e.g. `30s`;
    /// then they are stopped (their stop signal, their cleanup grace, SIGKILL) and handed back
    /// to run again elsewhere. A second signal kills them and exits at once.
    #[arg(long, env = "DAGRID_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: std::time::Duration,
    /// Whether no process of a step may outlive its worker: steps are then spawned by a small
    /// step supervisor process per worker, which SIGKILLs every step's process group and
    /// every process they left (grandchildren included) when the worker dies by any signal.
    /// `false`: the worker spawns steps itself and nothing kills them if it dies (under
    /// systemd or Kubernetes the worker's cgroup then does).
    #[arg(long, env = "DAGRID_STEPS_DIE_WITH_WORKER", default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    steps_die_with_worker: bool,
    /// Serve the worker's health endpoints on this address, e.g. `0.0.0.0:9091`:
    /// `/health/live`, `/health/ready` (503 when Redis is unreachable, the claim loop is
    /// stalled or the worker is draining) and `/metrics`. Off by default. In `start-all` the
    /// listener reports the first worker (metrics are process-wide).
    #[arg(long, env = "DAGRID_WORKER_HEALTH_ADDR", value_name = "HOST:PORT")]
    health_addr: Option<std::net::SocketAddr>,
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
    step_env_allow: Vec<String>,
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
    step_env_deny: Vec<String>,
}

/// A `--step-env-allow` / `--step-env-deny` pattern: a glob over variable names.
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: HTTP API and orchestrator.
    Coordinator {
        #[command(flatten)]
        redis: RedisArgs,
        /// Address to listen on.
        #[arg(long, env = "DAGRID_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Directory of DAG files to register at startup.
        #[arg(long, env = "DAGRID_DAGS")]
        dags: Option<PathBuf>,
        #[command(flatten)]
        settings: service_config::CoordinatorConfigArgs,
    },
    /// Run a worker: claims steps and runs them as processes.
    Worker {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        /// The coordinators' --lease-timeout (default 10s; the same variable sets both): a
        /// step whose lease this worker could not renew for that long minus a margin (a
        /// quarter, at most 2s), Redis being unreachable, is stopped (SIGKILL within half the
        /// margin) and not reported, before a coordinator may run it elsewhere.
        #[arg(long, env = "DAGRID_LEASE_TIMEOUT", value_name = "DURATION", value_parser = service_config::parse_lease_flag)]
        lease_timeout: Option<std::time::Duration>,
    },
    /// Run a coordinator and N workers in one process; without --redis-url, also a private
    /// redis-server that is started and stopped with it.
    StartAll(services::StartAll),
    /// Submit one run of a DAG; prints its id. When a run with the same params (or
    /// --dedup-key) is already queued or running, that run's id is printed instead and
    /// stderr says so.
    Submit {
        #[command(flatten)]
        server: ServerArgs,
        /// DAG name.
        dag: String,
        /// A param, `NAME=value` (or `1=value` for a positional one); repeatable.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Wait for the run (the existing one when deduplicated) to finish; the exit code is
        /// then 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        queueing: options::QueueingArgs,
        #[command(flatten)]
        timing: options::TimingArgs,
    },
    /// Submit one run per file (or per file arriving in a directory, --watch) and follow them
    /// with a progress bar.
    Batch(batch::BatchArgs),
    /// Show a run and its steps.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Run id.
        run_id: String,
    },
    /// List runs, newest first.
    Runs {
        #[command(flatten)]
        server: ServerArgs,
        /// Only runs of this DAG.
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this status (queued, running, succeeded, failed, aborted); failed and
        /// aborted runs show the step that failed and its error.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Stop a queued or running run: its queued steps are removed, its running steps get
    /// SIGTERM (or their signalOnStop), then SIGKILL after the DAG's maxCleanUpTimeSec
    /// (default 5s); the run ends aborted.
    Stop {
        #[command(flatten)]
        server: ServerArgs,
        /// Run id.
        run_id: String,
    },
    /// Run a finished run again as a new attempt of the same run id (Dagu's `retry`): every
    /// failed or aborted step and everything downstream of them, or with --step only that step
    /// (--downstream: and its descendants). Succeeded steps keep their state and outputs.
    Retry {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: retry::RetryArgs,
    },
    /// Print a step's log to stdout: the worker's full log file when the coordinator can read
    /// it, else the last 16 KiB kept in Redis (stderr says so). Exit code 0 once printed (with
    /// --follow: once the step finished, whatever its status, which stderr names); 1 when the
    /// run, the step or its log is unknown, or the coordinator cannot be reached.
    Logs {
        #[command(flatten)]
        server: ServerArgs,
        /// Run id.
        run_id: String,
        /// Step name.
        step: String,
        /// Keep printing what the step writes (asking about once a second) until it
        /// finishes; waits for a step that has not started yet.
        #[arg(short = 'f', long)]
        follow: bool,
        /// An earlier attempt's log (`dagrid status` lists a step's attempts): its file when
        /// the coordinator can read it, else an error naming the file and worker.
        #[arg(long, value_name = "N")]
        attempt: Option<u32>,
    },
    /// List the registered DAGs, with the next fire time of scheduled ones.
    Dags {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show the steps ready and claimed per priority level, and each named queue: paused,
    /// active runs and maxConcurrency (`-`: no limit), waiting and delayed runs, the oldest
    /// wait.
    Queues {
        #[command(flatten)]
        server: ServerArgs,
        /// Also list the priority levels with nothing ready or claimed.
        #[arg(long)]
        all: bool,
    },
    /// Pause or resume a named queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Register (or update) DAG files on the coordinator.
    Register {
        #[command(flatten)]
        server: ServerArgs,
        /// DAG files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print what a run of a DAG would do, without running anything or writing anywhere: its
    /// levels (steps that can run at the same time), each step's command or script with params
    /// and env expanded as the worker would (outputs of earlier steps stay `${NAME}`). A DAG
    /// file is read locally; a name is looked up on the coordinator.
    Dry {
        #[command(flatten)]
        server: ServerArgs,
        /// A DAG file, or the name of a registered DAG.
        dag: String,
        /// A param, `NAME=value` (or `1=value` for a positional one); repeatable.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Probe a coordinator's (or a worker's --health-addr) `/health/ready`: exit code 0 when
    /// it answers 200, 1 otherwise with the reason on stderr. For container HEALTHCHECKs,
    /// systemd and scripts; sends no token (the probes need none).
    Health(health::HealthArgs),
    /// Check DAG files locally, without a coordinator.
    Validate {
        /// DAG files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `dagrid queue …`.
#[derive(Debug, Subcommand)]
enum QueueAction {
    /// Stop starting runs of the queue; its waiting runs stay queued, running ones finish.
    Pause {
        #[command(flatten)]
        server: ServerArgs,
        /// Queue name.
        name: String,
    },
    /// Start runs of the queue again, as its maxConcurrency allows.
    Resume {
        #[command(flatten)]
        server: ServerArgs,
        /// Queue name.
        name: String,
    },
}

fn main() -> ExitCode {
    // `dagrid __step-supervisor`: a worker's step supervisor, single-threaded, before anything.
    if let Some(code) = dagrid_worker::supervisor::entry() {
        return code;
    }
    let cli = Cli::parse();
    let service = matches!(
        cli.command,
        Command::Coordinator { .. } | Command::Worker { .. } | Command::StartAll(_)
    );
    init_tracing(cli.log_format, service);
    client::set_token(cli.token.clone());
    let runtime = match runtime_builder(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Most threads a worker's runtime starts for blocking work (step log files, tokio::fs); more
/// blocking calls wait for one.
const WORKER_BLOCKING_THREADS: usize = 4;

/// The async runtime of a command. `dagrid worker` runs on one thread: its steps are
/// processes of their own, and its loops (claim, reports, heartbeat, the steps' output)
/// mostly wait, so more threads only add memory (a stack and a malloc arena each); its
/// blocking pool is capped at [`WORKER_BLOCKING_THREADS`]. Every other command gets tokio's
/// multi-threaded runtime.
fn runtime_builder(command: &Command) -> tokio::runtime::Builder {
    match command {
        Command::Worker { .. } => {
            let mut b = tokio::runtime::Builder::new_current_thread();
            b.max_blocking_threads(WORKER_BLOCKING_THREADS);
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

fn init_tracing(format: LogFormat, service: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if service { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Coordinator {
            redis,
            listen,
            dags,
            settings,
        } => {
            services::coordinator(&redis, &listen, dags, &settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            redis,
            worker,
            lease_timeout,
        } => {
            services::worker(&redis, &worker, lease_timeout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::StartAll(args) => {
            services::start_all(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            server,
            dag,
            params,
            wait,
            queueing,
            timing,
        } => client::submit(&server.server, &dag, &params, &queueing, &timing, wait).await,
        Command::Batch(args) => batch::run(args).await,
        Command::Status { server, run_id } => client::status(&server.server, &run_id).await,
        Command::Runs {
            server,
            dag,
            status,
            limit,
        } => client::runs(&server.server, dag, status, limit).await,
        Command::Stop { server, run_id } => client::stop(&server.server, &run_id).await,
        Command::Logs {
            server,
            run_id,
            step,
            follow,
            attempt,
        } => logs::run(&server.server, &run_id, &step, follow, attempt).await,
        Command::Retry { server, args } => retry::run(&server.server, &args).await,
        Command::Dry {
            server,
            dag,
            params,
        } => dry::run(&server.server, &dag, &params).await,
        Command::Dags { server } => client::dags(&server.server).await,
        Command::Queues { server, all } => queues::list(&server.server, all).await,
        Command::Queue { action } => match action {
            QueueAction::Pause { server, name } => {
                queues::set_paused(&server.server, &name, true).await
            }
            QueueAction::Resume { server, name } => {
                queues::set_paused(&server.server, &name, false).await
            }
        },
        Command::Register { server, files } => client::register(&server.server, &files).await,
        Command::Health(args) => Ok(health::run(&args).await),
        Command::Validate { files } => Ok(client::validate(&files)),
    }
}
