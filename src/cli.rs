//! The command line of `dagrid` ([`main`]): its verbs and their flags, and the dispatch of each
//! verb to its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dagrid_worker::cli::{LogFormat, RedisArgs, WorkerCommand};

use crate::options::ServerArgs;
use crate::{
    batch, client, commands, dry, health, logs, options, queues, retry, services, workers,
};

/// A distributed workflow engine: Dagu-format DAGs of shell steps, queued in Redis, run by
/// stateless workers.
#[derive(Debug, Parser)]
#[command(name = "dagrid", version, about)]
pub(crate) struct Cli {
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
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        settings: dagrid_coordinator::config::CoordinatorConfigArgs,
        /// Print the effective settings (defaults, then --config, the environment and the
        /// flags) as YAML and exit, without connecting to Redis: the Redis URL's password
        /// and the API tokens' values show as `***`.
        #[arg(long)]
        print_config: bool,
    },
    /// Run a worker: claims steps and runs them as processes. Execs `dagrid-worker` (the same
    /// flags, a third of the memory) when it sits next to this binary.
    Worker(WorkerCommand),
    /// Run a coordinator and N workers in one process; without --redis-url, also a private
    /// redis-server that is started and stopped with it.
    StartAll(Box<services::StartAll>),
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
        /// Only the child runs of this run (created by its call steps), oldest first.
        #[arg(long)]
        parent: Option<String>,
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
    /// List the live workers: slots busy and total, last heartbeat, uptime, state (ok,
    /// stalled, draining) and labels (`--label` of `dagrid worker`).
    Workers {
        #[command(flatten)]
        server: ServerArgs,
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
pub(crate) enum QueueAction {
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

/// The `dagrid` binary: parses the command line, sets up tracing and the runtime, and runs the
/// verb; the exit code is the verb's (1 with the error on stderr when it fails).
pub fn main() -> ExitCode {
    // `dagrid __step-supervisor`: a worker's step supervisor, single-threaded, before anything.
    if let Some(code) = dagrid_worker::supervisor::entry() {
        return code;
    }
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Worker(command) => return worker(cli.log_format, &command),
        other => other,
    };
    let service = matches!(command, Command::Coordinator { .. } | Command::StartAll(_));
    dagrid_worker::cli::init_tracing(cli.log_format, if service { "info" } else { "warn" });
    client::set_token(cli.token.clone());
    // The services on every core; a client verb on one thread: `dagrid batch` follows
    // thousands of runs' events, and on a multi-threaded runtime each chunk of them would wake
    // a second thread for nothing (most of its CPU went to those wake-ups).
    let mut builder = if service {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `dagrid worker`: execs `dagrid-worker` with the same arguments when it sits next to this
/// binary (the worker alone: a third of this binary's resident memory); else, or when the
/// exec fails, runs the worker in this process, on the same one-thread runtime.
fn worker(format: LogFormat, command: &WorkerCommand) -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // Before the exec too, so that a sibling that is not used says why.
    dagrid_worker::cli::init_tracing(format, "info");
    let small = dagrid_worker::cli::sibling_binary();
    let exec_error = match (&small, dagrid_worker::cli::worker_args_of(&args)) {
        (Some(binary), Some(args)) => {
            use std::os::unix::process::CommandExt;
            Some(std::process::Command::new(binary).args(args).exec())
        }
        _ => None,
    };
    match (small, exec_error) {
        (Some(binary), Some(e)) => tracing::warn!(
            binary = %binary.display(),
            cause = %e,
            "cannot exec the worker binary; running the worker in this process"
        ),
        (Some(binary), None) => tracing::warn!(
            binary = %binary.display(),
            "cannot tell the worker's arguments apart from the global ones; running the worker in this process"
        ),
        (None, _) => tracing::info!(
            "no {} next to this binary: running the worker in this process (it takes more memory than the worker binary)",
            dagrid_worker::cli::BINARY
        ),
    }
    dagrid_worker::cli::run_in_runtime(command, services::supervisor_program())
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Coordinator {
            redis,
            listen,
            dags,
            settings,
            print_config: true,
        } => {
            print!(
                "{}",
                services::print_config(&redis, &listen, dags, &settings)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Coordinator {
            redis,
            listen,
            dags,
            settings,
            print_config: false,
        } => {
            services::coordinator(&redis, &listen, dags, &settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(_) => unreachable!("`dagrid worker` is started by `main`"),
        Command::StartAll(args) => {
            services::start_all(*args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            server,
            dag,
            params,
            wait,
            queueing,
            timing,
        } => commands::submit(&server.server, &dag, &params, &queueing, &timing, wait).await,
        Command::Batch(args) => batch::run(args).await,
        Command::Status { server, run_id } => commands::status(&server.server, &run_id).await,
        Command::Runs {
            server,
            dag,
            status,
            parent,
            limit,
        } => commands::runs(&server.server, dag, status, parent, limit).await,
        Command::Stop { server, run_id } => commands::stop(&server.server, &run_id).await,
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
        Command::Dags { server } => commands::dags(&server.server).await,
        Command::Queues { server, all } => queues::list(&server.server, all).await,
        Command::Workers { server } => workers::list(&server.server).await,
        Command::Queue { action } => match action {
            QueueAction::Pause { server, name } => {
                queues::set_paused(&server.server, &name, true).await
            }
            QueueAction::Resume { server, name } => {
                queues::set_paused(&server.server, &name, false).await
            }
        },
        Command::Register { server, files } => commands::register(&server.server, &files).await,
        Command::Health(args) => Ok(health::run(&args).await),
        Command::Validate { files } => Ok(commands::validate(&files)),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn dagrid_worker_takes_the_worker_binarys_flags() {
        let argv = [
            "--concurrency",
            "7",
            "--shutdown-grace",
            "2m",
            "--step-env-deny",
            "AWS_*",
            "--lease-timeout",
            "30s",
            "--label",
            "gpu=true",
        ];
        let dagrid = Cli::try_parse_from(["dagrid", "worker"].iter().chain(&argv)).unwrap();
        let Command::Worker(ours) = dagrid.command else {
            panic!("not the worker verb");
        };
        let small = dagrid_worker::cli::WorkerCli::try_parse_from(
            std::iter::once(&"dagrid-worker").chain(&argv),
        )
        .unwrap();
        assert_eq!(ours, small.command);
        let Command::StartAll(all) =
            Cli::try_parse_from(["dagrid", "start-all", "--concurrency", "7"])
                .unwrap()
                .command
        else {
            panic!("not start-all");
        };
        assert_eq!(all.worker.concurrency, 7);
        // start-all flattens the worker flags: its workers get the labels too.
        let Command::StartAll(all) = Cli::try_parse_from([
            "dagrid",
            "start-all",
            "--label",
            "gpu=true",
            "--label",
            "region=eu",
        ])
        .unwrap()
        .command
        else {
            panic!("not start-all");
        };
        let config = all.worker.config(Some(0), vec![], None, None);
        assert_eq!(
            config.labels,
            [
                ("gpu".into(), "true".into()),
                ("region".into(), "eu".into())
            ]
        );
        let e = Cli::try_parse_from(["dagrid", "start-all", "--label", "gpu"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--label") && e.contains("no '='"), "{e}");
        assert_eq!(
            dagrid_coordinator::DEFAULT_LEASE_TIMEOUT,
            dagrid_worker::Config::default().lease_timeout.unwrap(),
            "a worker's default lease is the coordinators'"
        );
    }
}
