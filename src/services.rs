//! The service verbs: `coordinator`, `worker` and `start-all`, with ordered shutdown on SIGINT
//! or SIGTERM (a second signal SIGKILLs the running steps' process groups and exits at once).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use dagrid_shared::redis::embedded::{EmbeddedOptions, EmbeddedRedis};
use dagrid_shared::Redis;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use dagrid_coordinator::config::{CoordinatorConfigArgs, CoordinatorSettings};

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
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    coordinator_config: CoordinatorConfigArgs,
    /// Once ready, write the API's base URL to this file (for scripts that start it in the background).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

pub(crate) use dagrid_worker::cli::shutdown_on_signal;
use dagrid_worker::cli::{redis_secrets, RedisArgs, WorkerArgs};

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
    let config = coordinator_config(dags, coordinator_settings(settings)?);
    let r = Redis::open(&redis.redis_url, &redis.namespace)?;
    let listener = bind(listen).await?;
    let tracker = TaskTracker::new();
    let shutdown = shutdown_on_signal(&tracker);
    dagrid_coordinator::serve(listener, r, config, shutdown).await?;
    Ok(())
}

/// The coordinator's config from the DAG directory and the resolved settings.
fn coordinator_config(
    dags: Option<PathBuf>,
    settings: CoordinatorSettings,
) -> dagrid_coordinator::Config {
    let mut config = dagrid_coordinator::Config {
        dags_dir: dags,
        coordinator_id: None,
        ..Default::default()
    };
    settings.apply(&mut config);
    config
}

/// `dagrid coordinator --print-config`: the settings the coordinator would run with (defaults,
/// then `--config`, the environment and the flags), as YAML, without connecting to Redis or
/// listening: the Redis URL with its password as `***`, API tokens by name and role only
/// ([`dagrid_coordinator::Config::effective`]).
///
/// # Errors
/// The same as `dagrid coordinator`'s for a setting that does not parse or is out of range
/// (file, flag or variable); the checks made when it starts serving (a listener without tokens
/// off loopback, the Redis server) are not made.
pub(crate) fn print_config(
    redis: &RedisArgs,
    listen: &str,
    dags: Option<PathBuf>,
    settings: &CoordinatorConfigArgs,
) -> anyhow::Result<String> {
    let file = settings.file().map(|f| f.display().to_string());
    let config = coordinator_config(dags, coordinator_settings(settings)?);
    let view = serde_json::json!({
        "redis": {
            "url": dagrid_shared::redis::conn::redact_url(&redis.redis_url),
            "namespace": redis.namespace,
        },
        "listen": listen,
        "config_file": file,
        "coordinator": config.effective(),
    });
    serde_yaml::to_string(&view).context("cannot write the settings as YAML")
}

/// The step supervisor program of the workers this process runs in-process (`start-all`,
/// or `dagrid worker` without the worker binary): `dagrid-worker` next to this binary when it
/// is there (its supervisor takes about half the memory of this binary's), held open from the
/// first call so that every supervisor of this process starts from the same file even after
/// an upgrade replaced it on disk (`/proc/self/fd/N`); else this binary (`/proc/self/exe`).
pub(crate) fn supervisor_program() -> PathBuf {
    static HELD: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let held = HELD.get_or_init(|| {
        dagrid_worker::cli::sibling_binary().and_then(|path| std::fs::File::open(path).ok())
    });
    match held {
        Some(file) if std::path::Path::new("/proc/self/fd").is_dir() => {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        }
        _ => dagrid_worker::cli::self_program(),
    }
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
            // Its clients are all in this process: the unix socket spares them the TCP stack
            // (the TCP port stays open for redis-cli and other tools).
            let url = server.local_url();
            info!(url = %dagrid_shared::redis::conn::redact_url(&url), port = server.port(), dir = %server.dir().display(), "started a private redis-server");
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
            dagrid_shared::redis::conn::redact_url(url)
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
            args.worker.config(
                Some(i),
                secrets.clone(),
                Some(settings_lease.unwrap_or(dagrid_coordinator::DEFAULT_LEASE_TIMEOUT)),
                Some(supervisor_program()),
            ),
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
            dagrid_shared::redis::conn::redact_url(url)
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
