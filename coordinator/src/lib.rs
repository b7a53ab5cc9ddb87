//! The dagrid coordinator: the HTTP API ([`api`]) and the orchestrator ([`orchestrator`]) that
//! moves runs along their DAGs. It keeps no state of its own: everything lives in Redis, so
//! several replicas can serve the same namespace side by side.
//!
//! A binary calls [`serve`] with a bound listener; tests call the same function on port 0.

mod admission;
mod api;
mod orchestrator;
mod plan;
mod reaper;
mod reconcile;
mod scheduler;
mod stop;
mod store;
mod timers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dagrid_shared::conn::{self, ConnError, Redis};
use dagrid_shared::keys::{COORDINATOR_GROUP, WORKER_GROUP};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Most runs one batch request may submit (`POST /api/v1/runs/batch`).
pub const MAX_BATCH: usize = api::MAX_BATCH;

/// Coordinator settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// A directory of DAG files (`*.yaml`, `*.yml`) to register at startup.
    pub dags_dir: Option<PathBuf>,
    /// This replica's consumer name in the coordinators' group; default
    /// `coordinator-<host>-<pid>-<random>`, unique per process start.
    pub coordinator_id: Option<String>,
    /// Named queues and their `maxConcurrency` (the most runs of the queue active at once),
    /// shared by every DAG that names the queue with `queue:` (Dagu's `queues.config`).
    pub queues: std::collections::BTreeMap<String, u32>,
    /// IANA time zone of cron schedules that name none (neither `CRON_TZ=` nor the DAG's
    /// `timezone:`); `None` means UTC.
    pub timezone: Option<String>,
    /// How long a worker may go without a heartbeat before its claimed steps are taken back
    /// and run again elsewhere (the lease); `None`: [`DEFAULT_LEASE_TIMEOUT`]. Must be longer
    /// than the workers' heartbeat interval (several intervals, so one slow beat is no death).
    pub lease_timeout: Option<std::time::Duration>,
    /// How often the reconciler looks for runs whose state drifted from the streams (a finding
    /// is repaired when the next sweep confirms it); `None`: every 30 s.
    pub reconcile_interval: Option<std::time::Duration>,
}

/// The lease when [`Config::lease_timeout`] is unset: 10 s, so a dead worker's step runs
/// again within about 11 s.
pub const DEFAULT_LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or refused a command.
    #[error(transparent)]
    Redis(#[from] ConnError),
    /// A DAG file in the DAG directory is invalid or unreadable.
    #[error("DAG file {path}: {message}")]
    DagFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, one problem per line.
        message: String,
    },
    /// A setting of [`Config`] is invalid.
    #[error("coordinator config {field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong and the fix.
        message: String,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Serves the API on `listener` and runs the orchestrator until `shutdown` is cancelled; then
/// readiness turns 503, in-flight requests finish and the orchestrator stops after its current
/// batch.
///
/// # Errors
/// [`Error::Redis`] when Redis cannot be prepared (consumer groups, scripts),
/// [`Error::DagFile`] when a file of `dags_dir` is not a valid DAG, [`Error::Http`] when the
/// server fails.
pub async fn serve(
    listener: TcpListener,
    redis: Redis,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let keys = redis.keys().clone();
    for ready in keys.ready_levels() {
        conn::ensure_group(&redis, &ready, WORKER_GROUP).await?;
    }
    conn::ensure_group(&redis, &keys.results(), COORDINATOR_GROUP).await?;
    conn::load_scripts(&mut redis.conn().await?).await?;
    if let Some(tz) = &config.timezone {
        dagrid_shared::schedule::parse_timezone(tz).map_err(|message| Error::Config {
            field: "timezone",
            message,
        })?;
    }
    let lease = config.lease_timeout.unwrap_or(DEFAULT_LEASE_TIMEOUT);
    if lease < std::time::Duration::from_secs(1) {
        return Err(Error::Config {
            field: "lease_timeout",
            message: format!(
                "{} is too short; use at least 1s (default 10s), several worker heartbeat intervals",
                humantime::format_duration(lease)
            ),
        });
    }
    let store = Arc::new(store::Store::new(
        redis,
        config.queues.clone(),
        config.timezone.clone(),
    ));
    if let Some(dir) = &config.dags_dir {
        register_dir(&store, dir).await?;
    }
    let consumer = config.coordinator_id.clone().unwrap_or_else(default_id);
    info!(coordinator.id = %consumer, addr = ?listener.local_addr().ok(), "coordinator started");

    let tracker = TaskTracker::new();
    tracker.spawn(orchestrator::run(store.clone(), consumer, shutdown.clone()));
    tracker.spawn(timers::run(store.clone(), shutdown.clone()));
    tracker.spawn(scheduler::run(store.clone(), shutdown.clone()));
    tracker.spawn(reaper::run(store.clone(), lease, shutdown.clone()));
    tracker.spawn(reconcile::run(
        store.clone(),
        config.reconcile_interval.unwrap_or(reconcile::SWEEP_EVERY),
        shutdown.clone(),
    ));
    tracker.close();

    let app = api::router(api::AppState {
        store,
        draining: shutdown.clone(),
    });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = server.await;
    shutdown.cancel();
    tracker.wait().await;
    info!("coordinator stopped");
    Ok(served?)
}

fn default_id() -> String {
    let host = sysinfo_host();
    let mut r = uuid::Uuid::new_v4().simple().to_string();
    r.truncate(8);
    format!("coordinator-{host}-{}-{r}", std::process::id())
}

fn sysinfo_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Registers every `*.yaml` / `*.yml` file of `dir` (not recursive), named after its `name:`
/// or its file stem.
async fn register_dir(store: &store::Store, dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::DagFile {
        path: dir.to_path_buf(),
        message: format!("cannot read the DAG directory: {e}; check --dags"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    paths.sort();
    for path in paths {
        let source = std::fs::read_to_string(&path).map_err(|e| Error::DagFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        match store.register_dag(&source, stem).await {
            Ok((dag, _)) => info!(dag = %dag.name, file = %path.display(), "registered DAG"),
            Err(store::RegisterError::Invalid(errors)) => {
                return Err(Error::DagFile {
                    path,
                    message: errors.to_string(),
                })
            }
            Err(store::RegisterError::Redis(e)) => return Err(e.into()),
        }
    }
    Ok(())
}
