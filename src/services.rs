//! The service verbs: `coordinator`, `worker` and `start-all`, with ordered shutdown on SIGINT
//! or SIGTERM (a second signal SIGKILLs the running steps' process groups and exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use dagrid_shared::embedded::{EmbeddedOptions, EmbeddedRedis};
use dagrid_shared::Redis;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::service_config::{CoordinatorConfigArgs, CoordinatorSettings};
use crate::{RedisArgs, WorkerArgs};

/// Arguments of `dagrid start-all`.
#[derive(Debug, Args)]
pub(crate) struct StartAll {
    /// Redis URL; without it a private redis-server is started (from PATH) and stopped on exit.
    #[arg(long, env = "DAGRID_REDIS_URL")]
    redis_url: Option<String>,
    /// Namespace: every key lives under the hash tag `{<namespace>}`.
    #[arg(long, env = "DAGRID_NAMESPACE", default_value = "dagrid")]
    namespace: String,
    /// Data directory of the private redis-server (default: a temporary directory, removed on exit).
    #[arg(long, env = "DAGRID_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API.
    #[arg(long, env = "DAGRID_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory of DAG files to register at startup.
    #[arg(long, env = "DAGRID_DAGS")]
    dags: Option<PathBuf>,
    /// Number of workers.
    #[arg(long, env = "DAGRID_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    coordinator_config: CoordinatorConfigArgs,
    /// Once ready, write the API's base URL to this file (for scripts that start it in the background).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// A token cancelled on the first SIGINT/SIGTERM; the second exits the process at once (130),
/// after SIGKILLing the process groups of the steps this process runs so none outlives it.
/// Those steps send no report: their ready entries stay pending and a coordinator reclaims
/// them once this process's workers' heartbeats are older than the lease.
pub(crate) fn shutdown_on_signal(tracker: &TaskTracker) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tracker.spawn(async move {
        wait_signal().await;
        info!("shutting down (a second signal exits at once)");
        t.cancel();
        wait_signal().await;
        let killed = dagrid_worker::kill_running_steps();
        warn!(
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

async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; is another dagrid running? pass --listen with a free address (127.0.0.1:0 picks one)")
    })
}

/// Resolves `--config`, `--queue` and `--timezone`, logs what they set, and returns the
/// settings (before anything starts, so a bad setting stops the service at once).
fn coordinator_settings(args: &CoordinatorConfigArgs) -> anyhow::Result<CoordinatorSettings> {
    let (settings, warnings) = args.resolve()?;
    for w in warnings {
        warn!("{w}");
    }
    info!(
        config = %args.file().map(|f| f.display().to_string()).unwrap_or_else(|| "-".into()),
        queues = ?settings.queues,
        timezone = settings.timezone.as_deref().unwrap_or("UTC"),
        retention_age = %humantime::format_duration(settings.retention_age),
        retention_count = settings.retention_count,
        "coordinator settings"
    );
    Ok(settings)
}

/// `dagrid coordinator`.
pub(crate) async fn coordinator(
    redis: &RedisArgs,
    listen: &str,
    dags: Option<PathBuf>,
    settings: &CoordinatorConfigArgs,
) -> anyhow::Result<()> {
    let settings = coordinator_settings(settings)?;
    let r = Redis::open(&redis.redis_url, &redis.namespace)?;
    let listener = bind(listen).await?;
    let tracker = TaskTracker::new();
    let shutdown = shutdown_on_signal(&tracker);
    let mut config = dagrid_coordinator::Config {
        dags_dir: dags,
        coordinator_id: None,
        ..Default::default()
    };
    settings.apply(&mut config);
    dagrid_coordinator::serve(listener, r, config, shutdown).await?;
    Ok(())
}

/// Worker settings; `index` numbers the workers of one process (start-all), whose ids must
/// differ. `secrets` are this process's secret values, which no step may inherit.
fn worker_config(
    w: &WorkerArgs,
    index: Option<u32>,
    secrets: Vec<String>,
) -> dagrid_worker::Config {
    let mut config = dagrid_worker::Config {
        concurrency: w.concurrency as usize,
        log_dir: w.log_dir.clone(),
        heartbeat_interval: w.heartbeat_interval,
        shutdown_grace: w.shutdown_grace,
        steps_die_with_worker: w.steps_die_with_worker,
        supervisor_program: Some(supervisor_program()),
        lease_timeout: Some(dagrid_coordinator::DEFAULT_LEASE_TIMEOUT),
        worker_id: None,
        // start-all: one listener, on the first worker.
        health_addr: w.health_addr.filter(|_| index.unwrap_or(0) == 0),
        step_env: dagrid_worker::StepEnv {
            allow: w.step_env_allow.clone(),
            deny: w.step_env_deny.clone(),
            secrets,
        },
    };
    if let Some(i) = index {
        config.worker_id = Some(format!("{}-w{i}", dagrid_worker::worker_id(&config)));
    }
    config
}

/// The program a worker runs as its step supervisor: this very binary, by `/proc/self/exe`
/// where it exists (the same file even after an upgrade replaced the one on disk), else its
/// path.
fn supervisor_program() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("dagrid"))
}

/// `dagrid worker`.
/// `lease`: the coordinators' `--lease-timeout` (`None`: their default).
pub(crate) async fn worker(
    redis: &RedisArgs,
    w: &WorkerArgs,
    lease: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let r = Redis::open(&redis.redis_url, &redis.namespace)?;
    let tracker = TaskTracker::new();
    let shutdown = shutdown_on_signal(&tracker);
    // Logs risky Redis settings (eviction, no persistence); never stops the worker.
    dagrid_shared::server_check::warn_on_risky_settings(&r).await;
    let secrets = redis_secrets(&redis.redis_url);
    let mut config = worker_config(w, None, secrets);
    config.lease_timeout = Some(lease.unwrap_or(dagrid_coordinator::DEFAULT_LEASE_TIMEOUT));
    dagrid_worker::run(r, config, shutdown).await?;
    Ok(())
}

/// `dagrid start-all`: a private redis-server unless `--redis-url`, a coordinator and N workers.
pub(crate) async fn start_all(args: StartAll) -> anyhow::Result<()> {
    let settings = coordinator_settings(&args.coordinator_config)?;
    let mut embedded = None;
    let url = match &args.redis_url {
        Some(u) => u.clone(),
        None => {
            let server = EmbeddedRedis::start(EmbeddedOptions {
                dir: args.data_dir.clone(),
                ..Default::default()
            })
            .await?;
            info!(url = %server.url(), dir = %server.dir().display(), "started a private redis-server");
            let url = server.url();
            embedded = Some(server);
            url
        }
    };
    let result = run_all(&args, &url, settings).await;
    if let Some(mut server) = embedded {
        server.stop().await;
        info!("stopped the private redis-server");
    }
    result
}

async fn run_all(args: &StartAll, url: &str, settings: CoordinatorSettings) -> anyhow::Result<()> {
    // The steps of this process's workers inherit none of the coordinator's API tokens either.
    let mut secrets = redis_secrets(url);
    secrets.extend(settings.auth.tokens.iter().map(|(_, _, t)| t.clone()));
    let settings_lease = settings.lease_timeout;
    let redis = Redis::open(url, &args.namespace)?;
    redis.ping().await.with_context(|| {
        format!(
            "Redis at {} does not answer",
            dagrid_shared::conn::redact_url(url)
        )
    })?;
    let listener = bind(&args.listen).await?;
    let api = format!("http://{}", listener.local_addr()?);
    let signals = TaskTracker::new();
    let shutdown = shutdown_on_signal(&signals);
    let tracker = TaskTracker::new();
    let mut config = dagrid_coordinator::Config {
        dags_dir: args.dags.clone(),
        coordinator_id: None,
        ..Default::default()
    };
    settings.apply(&mut config);
    let coordinator = tracker.spawn({
        let (redis, shutdown) = (redis.clone(), shutdown.clone());
        async move {
            let r = dagrid_coordinator::serve(listener, redis, config, shutdown.clone()).await;
            if let Err(e) = &r {
                error!(cause = %e, "coordinator failed");
                shutdown.cancel();
            }
            r
        }
    });
    for i in 0..args.workers {
        let (redis, shutdown, config) = (
            redis.clone(),
            shutdown.clone(),
            dagrid_worker::Config {
                lease_timeout: Some(
                    settings_lease.unwrap_or(dagrid_coordinator::DEFAULT_LEASE_TIMEOUT),
                ),
                ..worker_config(&args.worker, Some(i), secrets.clone())
            },
        );
        tracker.spawn(async move {
            if let Err(e) = dagrid_worker::run(redis, config, shutdown.clone()).await {
                error!(cause = %e, "worker failed");
                shutdown.cancel();
            }
        });
    }
    tracker.close();
    if wait_ready(&api, &shutdown).await {
        println!(
            "dagrid is up: API {api}, {} workers x {} slots, Redis {}; Ctrl-C stops it",
            args.workers,
            args.worker.concurrency,
            dagrid_shared::conn::redact_url(url)
        );
        if let Some(f) = &args.ready_file {
            std::fs::write(f, &api)
                .with_context(|| format!("cannot write --ready-file {}", f.display()))?;
        }
    }
    tracker.wait().await;
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    coordinator.await.context("coordinator task")??;
    Ok(())
}

/// The secret parts of a Redis URL that no step may inherit: the URL itself and its password
/// (`redis://user:password@host`), as written and percent-decoded.
fn redis_secrets(url: &str) -> Vec<String> {
    let mut secrets = vec![url.to_string()];
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest));
    if let Some((userinfo, _host)) = authority.and_then(|a| a.rsplit_once('@')) {
        let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
        if !password.is_empty() {
            secrets.push(password.to_string());
            let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            if decoded != password {
                secrets.push(decoded.into_owned());
            }
        }
    }
    secrets
}

/// Waits until the API answers `/health/ready`, or shutdown.
async fn wait_ready(api: &str, shutdown: &CancellationToken) -> bool {
    let http = reqwest::Client::new();
    let url = format!("{api}/health/ready");
    while !shutdown.is_cancelled() {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn worker_args(argv: &[&str]) -> WorkerArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Worker { worker, .. } => worker,
            Command::StartAll(all) => all.worker,
            other => panic!("not a service with workers: {other:?}"),
        }
    }

    #[test]
    fn worker_timing_flags_reach_the_worker_config() {
        let defaults = worker_config(&worker_args(&["dagrid", "worker"]), None, vec![]);
        assert_eq!(defaults.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(defaults.shutdown_grace, Duration::from_secs(30));
        let set = worker_config(
            &worker_args(&[
                "dagrid",
                "worker",
                "--heartbeat-interval",
                "500ms",
                "--shutdown-grace",
                "2m",
            ]),
            None,
            vec![],
        );
        assert_eq!(set.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(set.shutdown_grace, Duration::from_secs(120));
        let all = worker_config(
            &worker_args(&["dagrid", "start-all", "--shutdown-grace", "0s"]),
            Some(0),
            vec![],
        );
        assert_eq!(all.shutdown_grace, Duration::ZERO);
        assert!(Cli::try_parse_from(["dagrid", "worker", "--shutdown-grace", "soon"]).is_err());
    }

    #[test]
    fn step_env_flags_and_secrets_reach_the_worker_config() {
        let defaults = worker_config(&worker_args(&["dagrid", "worker"]), None, vec![]);
        assert_eq!(defaults.step_env, dagrid_worker::StepEnv::default());
        let set = worker_config(
            &worker_args(&[
                "dagrid",
                "start-all",
                "--step-env-allow",
                "PATH,HOME",
                "--step-env-allow",
                "AWS_*",
                "--step-env-deny",
                "AWS_SECRET*",
            ]),
            Some(1),
            redis_secrets("redis://app:s%3Cret@db:6379/2"),
        );
        assert_eq!(set.step_env.allow, ["PATH", "HOME", "AWS_*"]);
        assert_eq!(set.step_env.deny, ["AWS_SECRET*"]);
        assert_eq!(
            set.step_env.secrets,
            ["redis://app:s%3Cret@db:6379/2", "s%3Cret", "s<ret"]
        );
        assert_eq!(redis_secrets("redis://:pw@h:1"), ["redis://:pw@h:1", "pw"]);
        assert_eq!(redis_secrets("redis://h:1/0"), ["redis://h:1/0"]);
        assert_eq!(redis_secrets("rediss://u@h:1"), ["rediss://u@h:1", "u"]);
        let bad = Cli::try_parse_from(["dagrid", "worker", "--step-env-deny", "PATH,AWS_["]);
        let message = bad.unwrap_err().to_string();
        assert!(
            message.contains("--step-env-deny") && message.contains("AWS_["),
            "{message}"
        );
    }
}
