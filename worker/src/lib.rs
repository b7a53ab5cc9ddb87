//! dagrid's stateless worker: it claims ready steps from the Redis ready stream, runs each as a
//! process in its own process group, and reports back on the results stream.
//!
//! [`run`] wires four parts together, each in its own module:
//!
//! * `claim`: the claim loop, which fills the free slots with the most urgent ready steps (a
//!   script reading the priority levels from the highest down, and one blocking `XREADGROUP`
//!   only when every level is empty), and one task per claimed step;
//! * `exec`: how a step becomes a process, its log file and its outcome;
//! * `supervisor`: the step supervisor, a small process per worker that spawns the steps and
//!   SIGKILLs them all, grandchildren included, when the worker dies;
//! * `env`: a step's environment and files, over what the steps inherit of the worker's own
//!   variables (never its `DAGRID_*` settings or secrets), decided once at start;
//! * `report`: one task that delivers reports in batches, one pipeline per batch;
//! * `heartbeat`: proof of life every [`Config::heartbeat_interval`], which also refreshes the
//!   claims on the running steps' ready entries and notices the ones lost (`lease`);
//!
//! and [`vars`] holds the variable expansion steps use.
//!
//! The worker keeps nothing that matters in memory: a step it claimed stays in the ready
//! stream's pending list until its final report is written (atomically with the
//! acknowledgement), so if the worker dies the coordinators can hand the step to another one.
//! When a coordinator does so, or the step's run is stopped, the entry leaves this worker's
//! pending list; the next heartbeat notices, and the step's process group is stopped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dagrid_shared::labels::Labels;
use dagrid_shared::model::now_ms;
use dagrid_shared::Redis;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod backoff;
mod call;
mod claim;
pub mod cli;
mod conditions;
mod env;
mod evaluate;
mod exec;
mod health;
mod heartbeat;
mod lease;
mod report;
mod step;
pub mod supervisor;
mod task;
pub mod vars;

pub use env::inherited::{PatternError, StepEnv, RESERVED_PREFIX};

/// How many undelivered reports may queue per slot before step tasks wait for the reporter
/// (each step makes two: started and finished).
const REPORTS_PER_SLOT: usize = 4;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Slots: how many steps this worker runs at once (at least 1; default 2). Each running
    /// step is one process group.
    pub concurrency: usize,
    /// Where full step logs go: `<log_dir>/<dag>/<run_id>.<step>.<attempt>.log`; a name with
    /// characters outside `[A-Za-z0-9._-]` (or over 100 bytes) has them replaced by `_` and
    /// `+<16 hex digits of its SHA-256>` appended, so two steps never share a file. Created if
    /// missing. Default
    /// `<temp dir>/dagrid-logs`. Only the last 16 KiB of each step's output go to Redis.
    pub log_dir: PathBuf,
    /// How often the worker sends its heartbeat (default 1 s). The heartbeat key lives three
    /// intervals (it feeds the worker list); the coordinators take a silent worker's steps back
    /// after their lease timeout (default 10 s), which must span several intervals. Each
    /// heartbeat also
    /// refreshes the claims on the ready entries of the running steps (`XCLAIM … JUSTID`), so a
    /// step whose entry was taken away (reclaimed, or its run stopped) is stopped within one
    /// interval.
    pub heartbeat_interval: Duration,
    /// At shutdown, how long running steps may go on to finish by themselves (default 30 s;
    /// zero stops them at once). Those still running then are stopped (their stop signal, their
    /// cleanup grace, then SIGKILL) and handed back with a `Released` report, so a coordinator
    /// runs them again without counting an attempt.
    pub shutdown_grace: Duration,
    /// Whether no process of a step may outlive the worker (default true): the steps are then
    /// spawned by the worker's step supervisor ([`Config::supervisor_program`]), which
    /// SIGKILLs each step's process group and every process left in its tree (grandchildren
    /// such as `sh -c 'sleep 30'`) as soon as the worker dies, by any signal. False: the
    /// worker spawns steps itself (`posix_spawn`) and nothing kills them if it dies (under
    /// systemd with `KillMode=control-group`/`mixed`, or in a container, the cgroup does).
    pub steps_die_with_worker: bool,
    /// The program run as the step supervisor (`<program> __step-supervisor <worker id>`):
    /// a binary whose `main` calls [`supervisor::entry`] first, `dagrid-worker` (which sets
    /// its own `/proc/self/exe`) or `dagrid`. `None` (the default, for a library user without that binary):
    /// steps are spawned directly, with a warning when [`Config::steps_die_with_worker`] is
    /// set.
    pub supervisor_program: Option<PathBuf>,
    /// The coordinators' lease (`--lease-timeout`, default 10 s, as theirs): a step whose lease
    /// this worker could not renew (Redis unreachable) for the lease minus a margin (a quarter
    /// of it, at most 2 s) is stopped, its stop signal then SIGKILL within half the margin, and
    /// not reported, since a coordinator may hand it to another worker once the lease is over.
    /// `None`: steps are never stopped for that. Must not be longer than the coordinators'.
    pub lease_timeout: Option<Duration>,
    /// The worker's id: its consumer name in the ready stream's group and its heartbeat key.
    /// Default (`None`): `<host>-<pid>-<8 random hex>`, unique per process start, so a
    /// restarted worker is never mistaken for the one that died. Two workers in one process
    /// need distinct explicit ids.
    pub worker_id: Option<String>,
    /// Where to serve the worker's health endpoints (`/health/live`, `/health/ready`,
    /// `/metrics`; see the `health` module); default `None`: no listener. Bound before the
    /// worker connects to Redis; it turns unready as soon as shutdown begins and closes last.
    pub health_addr: Option<SocketAddr>,
    /// Which of the worker's own environment variables its steps inherit: by default all but
    /// the worker's `DAGRID_*` settings and any variable holding one of
    /// [`StepEnv::secrets`]; [`StepEnv::allow`] and [`StepEnv::deny`] narrow it. Read once,
    /// when [`run`] starts.
    pub step_env: StepEnv,
    /// The worker's labels as given (`--label`), checked again by [`run`] (a key given twice
    /// is an error); shown in its heartbeats and matched against DAGs' worker selectors.
    pub labels: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 2,
            log_dir: std::env::temp_dir().join("dagrid-logs"),
            heartbeat_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            steps_die_with_worker: true,
            supervisor_program: None,
            lease_timeout: Some(Duration::from_secs(10)),
            worker_id: None,
            health_addr: None,
            step_env: StepEnv::default(),
            labels: Vec::new(),
        }
    }
}

/// Why the worker could not run. Every variant is fatal and needs the configuration fixed;
/// Redis being unreachable is not an error (the worker waits and retries).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid worker setting: {0}")]
    InvalidConfig(String),
    /// The log directory cannot be created, or no file can be created in it.
    #[error(
        "cannot create the worker's log directory {}: {source}; create it or pass a writable --log-dir",
        path.display()
    )]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The health listener cannot bind its address ([`Config::health_addr`]).
    #[error(
        "cannot listen on {addr} for the worker's health endpoints: {source}; pass a free --health-addr (port 0 picks one)"
    )]
    HealthListener {
        /// The address.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// Redis refused the worker at startup for a reason that waiting does not fix (a wrong
    /// password or ACL user, an untrusted TLS certificate, a bad URL); the message says which.
    #[error(
        "Redis refused the worker: {0}; fix --redis-url (credentials, TLS) and start it again"
    )]
    Redis(#[source] dagrid_shared::ConnError),
    /// A `--step-env-allow` / `--step-env-deny` pattern does not parse.
    #[error("invalid worker setting: {0}")]
    StepEnvPattern(PatternError),
    /// The step supervisor ([`Config::supervisor_program`]) cannot be started.
    #[error(
        "{0}; check the worker's binary (Config::supervisor_program), or pass --steps-die-with-worker false to spawn steps without it"
    )]
    Supervisor(#[source] std::io::Error),
    /// Another worker running in this process has the same id.
    #[error(
        "worker id {0:?} is already used by another worker in this process; give each worker its own id (Config::worker_id)"
    )]
    DuplicateWorkerId(String),
}

/// The worker id that [`run`] uses for `config`: [`Config::worker_id`] when set, else
/// `<host>-<pid>-<8 random hex>`, generated once per process (so calling this before [`run`]
/// gives the id `run` will use).
pub fn worker_id(config: &Config) -> String {
    if let Some(id) = &config.worker_id {
        return id.clone();
    }
    static DEFAULT: OnceLock<String> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let random = uuid::Uuid::new_v4().simple().to_string();
            format!(
                "{}-{}-{}",
                env::sanitize(&heartbeat::host_name()),
                std::process::id(),
                &random[..8]
            )
        })
        .clone()
}

/// Runs a worker until `shutdown` is cancelled.
///
/// At start it creates the ready and results streams' consumer groups if missing and loads the
/// Lua scripts (retrying while Redis is unreachable), then claims and runs steps. When
/// `shutdown` is cancelled it stops claiming at once (claimed steps not started yet are handed
/// back with a `Released` report), lets the running steps finish for up to
/// [`Config::shutdown_grace`] (they report normally), then stops the ones still running and
/// hands them back (`Released`), flushes the reports (retrying for up to 10 s if Redis is
/// down), stops the heartbeat and deregisters (deleting its consumer when it holds no ready
/// entries), then returns. Redis errors while running are logged and retried with back-off;
/// they never end the worker and never stop a step.
///
/// A process that must exit before `run` returns calls [`kill_running_steps`] first.
///
/// # Errors
/// [`Error::InvalidConfig`] when `concurrency` is 0, `heartbeat_interval` is zero or the
/// worker id is empty; [`Error::StepEnvPattern`] when a [`Config::step_env`] pattern does not
/// parse; [`Error::LogDir`] when the log directory cannot be created;
/// [`Error::DuplicateWorkerId`] when another worker of this process runs with the same id;
/// [`Error::HealthListener`] when [`Config::health_addr`] cannot be bound; [`Error::Redis`]
/// when Redis refuses the worker for a reason waiting does not fix (wrong credentials).
pub async fn run(redis: Redis, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    validate(&config)?;
    let labels = labels_of(&config)?;
    let worker_id = worker_id(&config);
    // Every connection of this worker carries its id (CLIENT SETNAME), so that the coordinators
    // see at once when it has none left: it died.
    let redis = redis
        .named(&dagrid_shared::redis::keys::worker_client_name(&worker_id))
        .map_err(Error::Redis)?;
    let _id = ActiveId::claim(&worker_id)?;
    if let Err(e) = env::inherited::hide_process_from_steps() {
        tracing::warn!(cause = %e, "could not make the worker non-dumpable; a step running as its user can read its environment in /proc");
    }
    let inherited =
        Arc::new(env::Inherited::from_process(&config.step_env).map_err(Error::StepEnvPattern)?);
    if inherited.get("PATH").is_none() {
        tracing::warn!("steps inherit no PATH (see --step-env-allow): they find only programs given by their path");
    }
    // Step log files are created when a step first writes output, so a log directory the
    // worker cannot write to is found here, at start, rather than by the first step.
    let log_dir = config.log_dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&log_dir)?;
        // A name of its own: workers of one process (start-all) share the pid and the dir.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = log_dir.join(format!(".dagrid-write-check.{}.{n}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        match std::fs::remove_file(&probe) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|source| Error::LogDir {
        path: config.log_dir.clone(),
        source,
    })?;
    let launcher = Arc::new(
        match (config.steps_die_with_worker, &config.supervisor_program) {
            (false, _) => supervisor::Launcher::Direct,
            (true, None) => {
                tracing::warn!("no step supervisor program is configured (Config::supervisor_program): steps are spawned by the worker itself and may outlive it");
                supervisor::Launcher::Direct
            }
            (true, Some(program)) => supervisor::Launcher::Supervised(
                supervisor::Supervisor::start(program, &worker_id, &inherited)
                    .map_err(Error::Supervisor)?,
            ),
        },
    );
    tracing::info!(
        worker.id = %worker_id,
        concurrency = config.concurrency,
        steps_die_with_worker = matches!(*launcher, supervisor::Launcher::Supervised(_)),
        log_dir = %config.log_dir.display(),
        step_env.allow = ?config.step_env.allow,
        step_env.deny = ?config.step_env.deny,
        step_env.inherited = inherited.len(),
        labels = %labels,
        "worker starting"
    );

    let busy = Arc::new(AtomicUsize::new(0));
    let signals = Arc::new(health::Signals::new(
        busy.clone(),
        config.concurrency,
        heartbeat::ttl(config.heartbeat_interval),
        now_ms(),
        shutdown.clone(),
    ));
    // The health listener answers from the start (live; unready until the first heartbeat)
    // and stops last, after the deregistration.
    let stop_health = CancellationToken::new();
    let health_task = match config.health_addr {
        Some(addr) => {
            let listener = health::bind(addr).await?;
            Some(tokio::spawn(health::serve(
                listener,
                signals.clone(),
                stop_health.clone(),
            )))
        }
        None => None,
    };
    let stop_health_listener = || async {
        stop_health.cancel();
        if let Some(task) = health_task {
            if let Err(e) = task.await {
                tracing::error!(cause = %e, "the health listener task failed");
            }
        }
    };

    let mut backoff = backoff::Backoff::new();
    while let Err(e) = claim::prepare(&redis).await {
        if !e.is_transient() {
            launcher.shutdown().await;
            stop_health_listener().await;
            return Err(Error::Redis(e));
        }
        let delay = backoff.next_delay();
        tracing::warn!(cause = %e, retry_in = ?delay, "cannot prepare the Redis streams and scripts; retrying");
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                launcher.shutdown().await;
                stop_health_listener().await;
                return Ok(());
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }

    let leases = Arc::new(lease::Leases::new(config.lease_timeout));
    let (reports, queued) = report::channel(REPORTS_PER_SLOT * config.concurrency);
    let draining = CancellationToken::new();
    let stop_heartbeat = CancellationToken::new();
    let services = TaskTracker::new();
    let reporter = services.spawn(report::run(redis.clone(), queued, draining.clone()));
    let heartbeat = services.spawn(heartbeat::run(
        heartbeat::Beat {
            redis: redis.clone(),
            worker_id: worker_id.clone(),
            host: heartbeat::host_name(),
            interval: config.heartbeat_interval,
            slots_total: config.concurrency,
            busy: busy.clone(),
            started_ms: now_ms(),
            leases: leases.clone(),
            signals: signals.clone(),
            labels: labels.clone(),
        },
        stop_heartbeat.clone(),
    ));

    let steps = TaskTracker::new();
    let release = CancellationToken::new();
    let claimer = claim::Claimer {
        runner: step::StepRunner {
            redis,
            worker_id: worker_id.clone(),
            log_dir: config.log_dir.clone(),
            inherited,
            launcher: launcher.clone(),
            busy,
            last_run_ms: Arc::new(AtomicU64::new(u64::MAX)),
            reports,
            release: release.clone(),
        },
        slots: Arc::new(Semaphore::new(config.concurrency)),
        steps: steps.clone(),
        leases,
        progress: signals,
        labels,
    };
    // A task of its own, not inline in this future: on the current-thread runtime of
    // `dagrid-worker` the future given to `block_on` is polled only after the tasks already
    // queued, so a claim sent from here would always leave after the reporter's read of the
    // step that just freed the slot, in a write of its own. As a task, it is queued beside the
    // reporter and both requests leave in one write (see `Claimer::claim`).
    let claiming = services.spawn(claimer.run(shutdown));
    services.close();
    if let Err(e) = claiming.await {
        tracing::error!(cause = %e, "the claim loop failed");
    }

    // Every report sender lives in the claimer (dropped above) or in a step task.
    steps.close();
    if !steps.is_empty() {
        tracing::info!(
            steps = steps.len(),
            grace = ?config.shutdown_grace,
            "waiting for the running steps to finish"
        );
    }
    if tokio::time::timeout(config.shutdown_grace, steps.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            steps = steps.len(),
            "shutdown grace over: stopping the running steps and handing them back"
        );
        release.cancel();
        // Bounded: each step gets its stop signal, then SIGKILL after its cleanup grace.
        steps.wait().await;
    }
    // Every step has ended: the supervisor SIGKILLs what they left behind, then exits.
    launcher.shutdown().await;
    draining.cancel();
    if let Err(e) = reporter.await {
        tracing::error!(cause = %e, "the reporter task failed");
    }
    stop_heartbeat.cancel();
    if let Err(e) = heartbeat.await {
        tracing::error!(cause = %e, "the heartbeat task failed");
    }
    services.wait().await;
    stop_health_listener().await;
    tracing::info!(worker.id = %worker_id, "worker stopped");
    Ok(())
}

/// SIGKILLs the process group of every step running in this process (every worker of it),
/// without a grace, and returns how many there were. For a process about to exit at once (a
/// second SIGINT or SIGTERM) so that no step process outlives it. The steps get no final
/// report: their ready entries stay pending for this worker, and a coordinator reclaims them
/// and runs the steps again once this worker's heartbeat is older than the lease.
pub fn kill_running_steps() -> usize {
    exec::kill_all_groups()
}

/// The worker's labels, checked (see [`dagrid_shared::labels::Labels`]).
fn labels_of(config: &Config) -> Result<Labels, Error> {
    let mut labels = Labels::new();
    for (k, v) in &config.labels {
        labels
            .insert(k, v)
            .map_err(|e| Error::InvalidConfig(format!("--label (DAGRID_WORKER_LABELS): {e}")))?;
    }
    Ok(labels)
}

fn validate(config: &Config) -> Result<(), Error> {
    if config.concurrency == 0 {
        return Err(Error::InvalidConfig(
            "concurrency must be at least 1".into(),
        ));
    }
    if config.heartbeat_interval.is_zero() {
        return Err(Error::InvalidConfig(
            "heartbeat_interval must be longer than zero (default 1s)".into(),
        ));
    }
    if config
        .lease_timeout
        .is_some_and(|l| l <= config.heartbeat_interval)
    {
        return Err(Error::InvalidConfig(
            "lease_timeout must be longer than heartbeat_interval (several of them; default 10s and 1s)".into(),
        ));
    }
    if config
        .worker_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err(Error::InvalidConfig(
            "worker_id must not be empty; leave it unset for a generated one".into(),
        ));
    }
    Ok(())
}

/// The ids of the workers running in this process.
static ACTIVE_IDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Marks a worker id as in use in this process while alive.
struct ActiveId(String);

impl ActiveId {
    fn claim(id: &str) -> Result<Self, Error> {
        let mut ids = ACTIVE_IDS.lock().unwrap_or_else(|p| p.into_inner());
        if !ids.insert(id.to_string()) {
            return Err(Error::DuplicateWorkerId(id.to_string()));
        }
        Ok(Self(id.to_string()))
    }
}

impl Drop for ActiveId {
    fn drop(&mut self) {
        ACTIVE_IDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_worker_id_is_stable_within_the_process() {
        let config = Config::default();
        let id = worker_id(&config);
        assert_eq!(worker_id(&config), id);
        let parts: Vec<&str> = id.rsplitn(3, '-').collect();
        assert_eq!(parts[0].len(), 8, "{id}");
        assert!(parts[0].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
        let explicit = Config {
            worker_id: Some("w1".into()),
            ..Config::default()
        };
        assert_eq!(worker_id(&explicit), "w1");
    }

    #[test]
    fn rejects_bad_settings() {
        let zero = Config {
            concurrency: 0,
            ..Config::default()
        };
        assert!(matches!(validate(&zero), Err(Error::InvalidConfig(_))));
        let no_interval = Config {
            heartbeat_interval: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(
            validate(&no_interval),
            Err(Error::InvalidConfig(_))
        ));
        assert!(validate(&Config::default()).is_ok());
    }

    #[test]
    fn a_label_key_given_twice_is_refused_with_its_name() {
        let twice = Config {
            labels: vec![
                ("gpu".into(), "true".into()),
                ("gpu".into(), "false".into()),
            ],
            ..Config::default()
        };
        let e = labels_of(&twice).unwrap_err().to_string();
        assert!(
            e.contains("--label") && e.contains("\"gpu\" is given twice"),
            "{e}"
        );
        let ok = Config {
            labels: vec![
                ("region".into(), "eu".into()),
                ("gpu".into(), "true".into()),
            ],
            ..Config::default()
        };
        assert_eq!(labels_of(&ok).unwrap().canonical(), "gpu=true,region=eu");
    }

    #[test]
    fn a_worker_id_is_used_once_per_process() {
        let first = ActiveId::claim("dup-test").unwrap();
        assert!(matches!(
            ActiveId::claim("dup-test"),
            Err(Error::DuplicateWorkerId(_))
        ));
        drop(first);
        assert!(ActiveId::claim("dup-test").is_ok());
    }
}
