//! The dagrid coordinator: the HTTP API ([`api`]) and the orchestrator ([`orchestrator`]) that
//! moves runs along their DAGs. It keeps no state of its own: everything lives in Redis, so
//! several replicas can serve the same namespace side by side.
//!
//! A binary calls [`serve`] with a bound listener; tests call the same function on port 0.

mod api;
mod calls;
mod cluster;
pub mod config;
mod effective;
mod events;
mod http;
mod orchestrator;
mod reaper;
mod reconcile;
mod retention;
mod scheduler;
mod store;
mod timers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::redis::conn::{ConnError, Redis};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use dagrid_shared::plan;
pub use http::{raise_nofile_limit, HttpLimits, PROBE_RESERVE};

/// Most runs one batch request may submit (`POST /api/v1/runs/batch`).
pub const MAX_BATCH: usize = api::MAX_BATCH;

/// How long requests in flight at shutdown may take to finish before the coordinator stops
/// without them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often each replica checks that the DAGs of [`Config::dags_dir`] are still registered
/// (Redis restarted without persistence loses them) and registers the missing ones again.
const DAGS_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait between two attempts to reach Redis at startup.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(5);

/// Coordinator settings.
#[derive(Debug, Clone)]
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
    /// How long a finished run (succeeded, failed, aborted) is kept after it finished, with
    /// its log tails and index entries; default 7 days; zero keeps runs whatever their age.
    pub retention_age: Duration,
    /// How many finished runs are kept at most, the newest by creation time; default 10,000;
    /// 0 keeps any number.
    pub retention_count: u64,
    /// Time between two retention sweeps; default 1 minute. Every replica sweeps; the
    /// deletions are atomic checks, so they never overlap harmfully.
    pub retention_interval: Duration,
    /// API tokens and which paths are public ([`Auth`]); default: no token, an open API on
    /// loopback only.
    pub auth: Auth,
    /// Deadlines and the connection cap of the HTTP server ([`HttpLimits`]).
    pub http: HttpLimits,
}

/// Who may call the API ([`api`]'s `auth` middleware): without any token every request is let
/// through, and [`serve`] then refuses a listener that is not on loopback unless
/// `insecure_no_auth`.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The tokens a request may carry as `Authorization: Bearer <token>`; empty: no token is
    /// needed.
    pub tokens: Vec<ApiToken>,
    /// Whether `GET /metrics` needs no token (default true: Prometheus scrapes it as is; the
    /// metrics hold counts, DAG and queue names, never params or logs). With false it needs a
    /// token (read is enough).
    pub public_metrics: bool,
    /// Whether the detailed `GET /health` view needs no token (default false: it names
    /// workers and hosts). `/health/live` and `/health/ready` are always public.
    pub public_health: bool,
    /// Serve an open API (no token configured) on an address other than loopback.
    pub insecure_no_auth: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            public_metrics: true,
            public_health: false,
            insecure_no_auth: false,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads only: `GET`, `HEAD`, `OPTIONS` and the POST routes that only read
    /// (`/api/v1/runs/lookup`); a write gets 403 `forbidden`.
    Read,
    /// Everything.
    Admin,
}

impl Role {
    /// `read` or `admin`, as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One API token: a name (for logs and messages; never the secret), a role and the secret.
/// Its `Debug` output hides the secret.
#[derive(Clone)]
pub struct ApiToken {
    /// A name for people and logs, e.g. `ci` or `dashboard`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    secret: String,
}

impl ApiToken {
    /// A token named `name` with role `role` whose value is `secret`.
    pub fn new(name: impl Into<String>, role: Role, secret: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role,
            secret: secret.into(),
        }
    }

    /// The secret (the value of the bearer header).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dags_dir: None,
            coordinator_id: None,
            queues: Default::default(),
            timezone: None,
            lease_timeout: None,
            reconcile_interval: None,
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_count: 10_000,
            retention_interval: Duration::from_secs(60),
            auth: Auth::default(),
            http: HttpLimits::default(),
        }
    }
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

/// Serves the API on `listener` and runs the orchestrator, the timers, the cron scheduler and
/// retention until `shutdown` is cancelled.
///
/// At start it makes the consumer groups, loads the scripts and registers the DAGs of
/// `dags_dir`, waiting with back-off (100 ms doubling to 5 s) while Redis is unreachable or
/// loading; the listener is bound meanwhile, so connections wait in its backlog. Then it logs
/// warnings about risky Redis settings ([`dagrid_shared::redis::server_check`]).
///
/// Connections have deadlines and their number is capped ([`Config::http`], [`HttpLimits`]).
///
/// Shutdown drains: readiness turns 503 and writes get 503 with `Retry-After` at once (also
/// on connections accepted before), no cron slot fires, new connections are refused, requests
/// in flight finish (for at most [`DRAIN_TIMEOUT`]) and the background loops stop after their
/// current batch.
///
/// Redis going away later is never an error: every loop logs, backs off and retries, and
/// after Redis lost its data (a restart without persistence) the consumer groups are made
/// again and the DAGs of `dags_dir` registered again.
///
/// # Errors
/// [`Error::Redis`] when Redis refuses for a reason that waiting does not fix (for example
/// bad credentials), [`Error::DagFile`] when a file of `dags_dir` is not a valid DAG,
/// [`Error::Config`] for an invalid setting (also: no API token while `listener` is not on
/// loopback, unless [`Auth::insecure_no_auth`]), [`Error::Http`] when the server fails.
pub async fn serve(
    listener: TcpListener,
    redis: Redis,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    check_auth(&config.auth, listener.local_addr()?)?;
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
        redis.clone(),
        config.queues.clone(),
        config.timezone.clone(),
    ));
    let dag_files = match &config.dags_dir {
        Some(dir) => read_dag_dir(dir)?,
        None => Vec::new(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match prepare(&store, &dag_files).await {
            Ok(()) => break,
            Err(Error::Redis(e)) if e.is_transient() => {
                warn!(cause = %e, retry_in = ?backoff, "Redis is not reachable yet; the coordinator waits for it");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_STARTUP_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
    store.warn_on_risky_settings().await;
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
    tracker.spawn(retention::run(
        store.clone(),
        retention::Policy::from_config(&config),
        shutdown.clone(),
    ));
    if !dag_files.is_empty() {
        tracker.spawn(keep_dags_registered(
            store.clone(),
            dag_files,
            shutdown.clone(),
        ));
    }
    let feed = events::Feed::new(store.clone());
    tracker.spawn(events::run(feed.clone(), shutdown.clone()));
    tracker.close();

    let app = api::router(
        api::AppState {
            store,
            draining: shutdown.clone(),
            started: std::time::Instant::now(),
            events: feed,
            keep_alive: api::events::keep_alive_for(config.http.idle_timeout),
        },
        &config.auth,
    );
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        config.http.body_read_timeout,
    ));
    let probes = api::probes_only(app.clone());
    let server = http::serve(listener, app, probes, config.http, shutdown.clone());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let served = tokio::select! {
        served = server => served,
        _ = drain_deadline => {
            warn!(timeout = ?DRAIN_TIMEOUT, "requests still in flight at the drain deadline; stopping without them");
            Ok(())
        }
    };
    shutdown.cancel();
    tracker.wait().await;
    info!("coordinator stopped");
    Ok(served?)
}

/// Checks the tokens (none empty, no name or value twice) and the loopback rule, and logs the
/// access mode: `API tokens: N admin, M read`, or that the API is open.
fn check_auth(auth: &Auth, addr: std::net::SocketAddr) -> Result<(), Error> {
    let bad = |message: String| Error::Config {
        field: "auth.tokens",
        message,
    };
    for (i, t) in auth.tokens.iter().enumerate() {
        if t.name.trim().is_empty() {
            return Err(bad(format!(
                "token {i} has an empty name; name every token"
            )));
        }
        if t.secret.trim().is_empty() {
            return Err(bad(format!(
                "token {:?} is empty; give it a secret value (for example `openssl rand -hex 32`)",
                t.name
            )));
        }
        if let Some(first) = auth.tokens[..i].iter().find(|o| o.name == t.name) {
            return Err(bad(format!(
                "the name {:?} is given to two tokens; name each token once",
                first.name
            )));
        }
        if let Some(first) = auth.tokens[..i].iter().find(|o| o.secret == t.secret) {
            return Err(bad(format!(
                "tokens {:?} and {:?} have the same value; give each token its own",
                first.name, t.name
            )));
        }
    }
    if auth.tokens.is_empty() {
        if !addr.ip().is_loopback() && !auth.insecure_no_auth {
            return Err(Error::Config {
                field: "auth",
                message: format!(
                    "no API token is configured, so the API on {addr} would be open to anyone who can reach it; \
                     configure tokens (--token-file, DAGRID_ADMIN_TOKEN / DAGRID_READ_TOKEN, or auth.tokens in --config), \
                     or listen on loopback (--listen 127.0.0.1:8080), \
                     or pass --insecure-no-auth (DAGRID_INSECURE_NO_AUTH=true) to serve an open API anyway"
                ),
            });
        }
        if addr.ip().is_loopback() {
            info!(%addr, "no API tokens: the API is open, listening on loopback only");
        } else {
            warn!(%addr, "no API tokens and --insecure-no-auth: the API is open to anyone who can reach {addr}");
        }
    } else {
        let admin = auth.tokens.iter().filter(|t| t.role == Role::Admin).count();
        info!(
            admin,
            read = auth.tokens.len() - admin,
            public_metrics = auth.public_metrics,
            public_health = auth.public_health,
            "API tokens: {admin} admin, {} read",
            auth.tokens.len() - admin
        );
    }
    Ok(())
}

/// Makes the consumer groups, loads the scripts and registers the DAG files read at startup.
async fn prepare(store: &store::Store, dag_files: &[DagFile]) -> Result<(), Error> {
    store.ensure_groups().await?;
    store.load_scripts().await?;
    for file in dag_files {
        register(store, file).await?;
    }
    Ok(())
}

/// Every [`DAGS_CHECK_INTERVAL`], registers again the DAG files of `--dags` whose DAG is no
/// longer registered: Redis restarted without persistence (or flushed) lost the registry, and
/// without this every submit would fail with "unknown DAG" until the coordinator restarts. The
/// files' contents are those read at startup, as at startup. Errors are logged and retried.
async fn keep_dags_registered(
    store: Arc<store::Store>,
    files: Vec<DagFile>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DAGS_CHECK_INTERVAL) => {}
        }
        // A file is lost when its DAG or one of its local DAGs is.
        let names: Vec<&str> = (files.iter())
            .flat_map(|f| std::iter::once(&f.name).chain(&f.locals))
            .map(String::as_str)
            .collect();
        let present = match store.registered(&names).await {
            Ok(p) => p,
            Err(e) => {
                warn!(cause = %e, "cannot check that the DAGs of --dags are registered; will retry");
                continue;
            }
        };
        let mut present = present.into_iter();
        let lost: Vec<&DagFile> = files
            .iter()
            .filter(|f| {
                let names = 1 + f.locals.len();
                // Consumes all of the file's entries (no short circuit).
                present.by_ref().take(names).filter(|p| !*p).count() > 0
            })
            .collect();
        if lost.is_empty() {
            continue;
        }
        warn!(
            dags = lost.len(),
            "DAGs of --dags are no longer registered (did Redis restart without persistence?); registering them again"
        );
        if let Err(e) = store.ensure_groups().await {
            warn!(cause = %e, "cannot make the consumer groups again; will retry");
        }
        for file in lost {
            if let Err(e) = register(&store, file).await {
                warn!(cause = %e, file = %file.path.display(), "cannot register the DAG again; will retry");
            }
        }
    }
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

/// A DAG file of `--dags`, read and checked at startup.
#[derive(Debug, Clone)]
struct DagFile {
    path: PathBuf,
    /// The DAG's name (its `name:`, else the file stem).
    name: String,
    /// The names of its local DAGs (`<name>.<local>`), registered with it.
    locals: Vec<String>,
    /// The file stem, the default name.
    stem: String,
    source: String,
}

/// Reads and checks every `*.yaml` / `*.yml` file of `dir` (not recursive), in name order.
fn read_dag_dir(dir: &Path) -> Result<Vec<DagFile>, Error> {
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
    let mut files = Vec::new();
    for path in paths {
        let source = std::fs::read_to_string(&path).map_err(|e| Error::DagFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let dag =
            dagrid_shared::dag::Dag::parse(&source, &stem).map_err(|errors| Error::DagFile {
                path: path.clone(),
                message: errors.to_string(),
            })?;
        files.push(DagFile {
            path,
            locals: dag.locals.iter().map(|l| l.name.clone()).collect(),
            name: dag.name,
            stem,
            source,
        });
    }
    Ok(files)
}

/// Registers one DAG file (named after its `name:` or its file stem).
async fn register(store: &store::Store, file: &DagFile) -> Result<(), Error> {
    match store.register_dag(&file.source, &file.stem).await {
        Ok(registered) => {
            let dag = &registered.dag.name;
            let locals = registered.locals.join(", ");
            info!(dag = %dag, locals = %locals, file = %file.path.display(), "registered DAG");
            Ok(())
        }
        Err(store::RegisterError::Invalid(errors)) => Err(Error::DagFile {
            path: file.path.clone(),
            message: errors.to_string(),
        }),
        Err(store::RegisterError::Redis(e)) => Err(e.into()),
        Err(e @ store::RegisterError::ParseTask(_)) => Err(Error::DagFile {
            path: file.path.clone(),
            message: e.to_string(),
        }),
    }
}
