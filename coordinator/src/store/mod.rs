//! The coordinator's reads and writes of Redis: DAG versions, runs, their indexes and logs.
//! Multi-key writes go through the Lua scripts of [`dagrid_shared::redis::scripts`].
//!
//! [`StoreError`] says what a failure means for the caller: Redis unreachable (retry later), a
//! compare-and-set lost too often (a conflict), a record missing or undecodable.
//! [`transition`] holds the one compare-and-set loop on a run, [`views`] the one read of the
//! cluster; [`leases`], [`drift`], [`schedules`] and [`events`] hold what the reaper, the
//! reconciler, the scheduler and the event feed read and write. Nothing outside this module
//! issues a Redis command.

pub(crate) mod admission;
mod call_cycles;
pub(crate) mod calls;
pub(crate) mod drift;
pub(crate) mod events;
pub(crate) mod leases;
mod logs;
pub(crate) mod results;
pub(crate) mod retention;
pub(crate) mod schedules;
pub(crate) mod stop;
mod timers;
pub(crate) mod transition;
pub(crate) mod validate;
pub(crate) mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use dagrid_shared::dag::{Dag, DagErrors};
use dagrid_shared::model::{self, DagRecord, Heartbeat, RunRecord, RunStatus};
use dagrid_shared::redis::conn::{self, ConnError, Redis};
use dagrid_shared::redis::fields::run_field;
use redis::Value;
use sha2::{Digest, Sha256};

/// A failure of the store, by what the caller can do about it (the API maps each to one
/// status: see `api::error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Redis is unreachable or a command failed: retry later (503 `redis_unavailable`).
    #[error(transparent)]
    Unavailable(#[from] ConnError),
    /// A compare-and-set on a run lost to other writers this many rounds in a row: the run
    /// keeps changing; try again (409 `conflict`).
    #[error("run {run} kept changing while being written ({rounds} compare-and-set rounds lost); try again")]
    Conflict {
        /// The run id.
        run: String,
        /// Rounds lost.
        rounds: usize,
    },
    /// No run has this id (404 `unknown_run`).
    #[error("no run with id {run:?}")]
    NotFound {
        /// The run id.
        run: String,
    },
    /// Stored data cannot be decoded or a record it points at is missing (500 `internal`).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A failed Redis command (counted in `dagrid_redis_errors_total`, as every [`ConnError`]).
impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.into())
    }
}

/// `Result` of the store.
pub(crate) type StoreResult<T, E = StoreError> = Result<T, E>;

/// Why a DAG could not be registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// The file is not a valid DAG.
    #[error("{0}")]
    Invalid(DagErrors),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] ConnError),
    /// The parse task panicked (a bug); nothing was registered.
    #[error("the DAG parse task failed: {0}")]
    ParseTask(String),
}

/// What [`Store::register_dag`] registered.
#[derive(Debug)]
pub(crate) struct Registered {
    /// The file's DAG, as registered (without its locals).
    pub(crate) dag: Arc<Dag>,
    /// Its registry entry.
    pub(crate) record: DagRecord,
    /// The names of the local DAGs registered with it (`<DAG>.<local>`), in document order.
    pub(crate) locals: Vec<String>,
}

/// Which runs to list, newest first (with `parent`: oldest first).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFilter {
    pub(crate) dag: Option<String>,
    pub(crate) status: Option<RunStatus>,
    /// Only runs older than this run id (the previous page's cursor); with `parent`, only
    /// runs newer than it.
    pub(crate) before: Option<String>,
    pub(crate) limit: usize,
    /// Only runs with this trigger (`api`, `batch`, `schedule`).
    pub(crate) trigger: Option<String>,
    /// Only runs one of whose params, written `NAME=value` (a positional one: `value`),
    /// contains this text.
    pub(crate) params: Option<String>,
    /// Only runs created at or after this time (ms since the Unix epoch).
    pub(crate) since_ms: Option<u64>,
    /// Only the child runs of this run (its [`Keys::children`] index), in creation order.
    ///
    /// [`Keys::children`]: dagrid_shared::redis::keys::Keys::children
    pub(crate) parent: Option<String>,
}

impl RunFilter {
    /// Whether `run` passes the filters that the walked index does not apply by itself.
    fn matches(&self, run: &RunRecord) -> bool {
        self.dag.as_ref().is_none_or(|d| *d == run.dag)
            && self.status.is_none_or(|st| st == run.status)
            && self.trigger.as_ref().is_none_or(|t| *t == run.trigger)
            && self.since_ms.is_none_or(|t| run.created_ms >= t)
            && self.params.as_ref().is_none_or(|text| {
                run.params.iter().any(|p| match &p.name {
                    Some(name) => format!("{name}={}", p.value).contains(text.as_str()),
                    None => p.value.contains(text.as_str()),
                })
            })
    }
}

/// Redis access for one namespace, with a cache of immutable DAG versions and the
/// coordinator's queue configuration.
#[derive(Debug)]
pub(crate) struct Store {
    redis: Redis,
    specs: Mutex<HashMap<String, Arc<Dag>>>,
    /// Named queues → `maxConcurrency` (from [`crate::Config::queues`]).
    pub(crate) queues: BTreeMap<String, u32>,
    /// Default IANA zone of cron schedules (from [`crate::Config::timezone`]).
    pub(crate) timezone: Option<String>,
    /// Wakes the timer loop when this replica delayed a run.
    pub(crate) delayed_added: tokio::sync::Notify,
    /// Test hook of [`Store::apply_cas_many`]: another writer changes every run between its
    /// read and its write, so each compare-and-set loses.
    #[cfg(test)]
    pub(crate) rival_writes: std::sync::atomic::AtomicBool,
}

/// DAG files parsed at once on the blocking pool; more wait their turn.
pub(crate) const PARSE_PERMITS: usize = 2;

/// Bounds the parses running on the blocking pool.
static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARSE_PERMITS);

/// [`Dag::parse`] on the blocking pool, holding one of [`PARSE_PERMITS`] until it ends (even if
/// the caller has gone).
async fn parse_off_thread(source: &str, default_name: &str) -> Result<Dag, RegisterError> {
    let permit = PARSES
        .acquire()
        .await
        .map_err(|e| RegisterError::ParseTask(e.to_string()))?;
    let (source, name) = (source.to_owned(), default_name.to_owned());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Dag::parse(&source, &name)
    })
    .await
    .map_err(|e| RegisterError::ParseTask(e.to_string()))?
    .map_err(RegisterError::Invalid)
}

/// The digest of a DAG version: the first 16 hex digits of the SHA-256 of its msgpack form.
fn digest_of(bytes: &[u8]) -> String {
    let mut d = hex::encode(Sha256::digest(bytes));
    d.truncate(16);
    d
}

/// A client-side encoding failure as a [`ConnError`].
pub(crate) use dagrid_shared::transition::encoding;

impl Store {
    pub(crate) fn new(
        redis: Redis,
        queues: BTreeMap<String, u32>,
        timezone: Option<String>,
    ) -> Self {
        Self {
            redis,
            specs: Mutex::new(HashMap::new()),
            queues,
            timezone,
            delayed_added: tokio::sync::Notify::new(),
            #[cfg(test)]
            rival_writes: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The connection pool, for the store's own modules only.
    pub(super) fn redis(&self) -> &Redis {
        &self.redis
    }

    /// `PING`.
    pub(crate) async fn ping(&self) -> Result<(), ConnError> {
        self.redis.ping().await
    }

    /// Makes the consumer groups of the ready and results streams that are missing
    /// ([`dagrid_shared::redis::conn::ensure_groups`]); returns how many were made.
    pub(crate) async fn ensure_groups(&self) -> Result<usize, ConnError> {
        dagrid_shared::redis::conn::ensure_groups(&self.redis).await
    }

    /// Loads every Lua script (`SCRIPT LOAD`, one pipeline).
    pub(crate) async fn load_scripts(&self) -> Result<(), ConnError> {
        dagrid_shared::redis::conn::load_scripts(&mut self.redis.conn().await?).await
    }

    /// Logs a warning for each Redis setting that can lose queued work
    /// ([`dagrid_shared::redis::server_check::warn_on_risky_settings`]).
    pub(crate) async fn warn_on_risky_settings(&self) {
        dagrid_shared::redis::server_check::warn_on_risky_settings(&self.redis).await;
    }

    /// The namespace's key names (naming only: reads and writes go through the store).
    pub(crate) fn keys(&self) -> &dagrid_shared::redis::keys::Keys {
        self.redis.keys()
    }

    /// Parses `source` and makes it the current version of its DAG, and each local DAG of a
    /// multi-document file ([`Dag::locals`], named `<DAG>.<local>`) the current version of its
    /// own (for each: SET the version NX, HSET the registry, all in one MULTI; the DAG's
    /// stored version has no locals). Registering the same source again changes nothing.
    /// Refused when a DAG of the file is on a cycle of calls (`calls.rs`).
    ///
    /// The parse runs once, on the blocking pool, at most [`PARSE_PERMITS`] at a time, so a
    /// hostile file never stalls the async threads serving other requests.
    pub(crate) async fn register_dag(
        &self,
        source: &str,
        default_name: &str,
    ) -> Result<Registered, RegisterError> {
        let mut dag = parse_off_thread(source, default_name).await?;
        let locals = std::mem::take(&mut dag.locals);
        let all: Vec<Dag> = std::iter::once(dag).chain(locals).collect();
        self.check_call_cycles(&all.iter().collect::<Vec<_>>())
            .await?;
        let keys = self.redis.keys();
        let updated_ms = model::now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut versions = Vec::with_capacity(all.len());
        for dag in all {
            let bytes = model::encode(&dag).map_err(encoding)?;
            let digest = digest_of(&bytes);
            let record = DagRecord {
                digest: digest.clone(),
                source: source.to_string(),
                updated_ms,
            };
            pipe.cmd("SET")
                .arg(keys.spec(&digest))
                .arg(&bytes)
                .arg("NX")
                .ignore()
                .hset(
                    keys.dags(),
                    &dag.name,
                    model::encode(&record).map_err(encoding)?,
                )
                .ignore();
            versions.push((dag, record));
        }
        let mut c = self.redis.conn().await?;
        pipe.query_async::<()>(&mut *c)
            .await
            .map_err(ConnError::from)?;
        drop(c);
        // Before any run of these versions can be queued on a selector's streams: each DAG's
        // selector and its steps' own.
        for (dag, _) in &versions {
            for selector in dag.selectors() {
                if !selector.is_empty() {
                    conn::register_selector(&self.redis, &selector).await?;
                }
            }
        }
        let mut versions = versions.into_iter().map(|(dag, record)| {
            let dag = Arc::new(dag);
            self.cache(&record.digest, dag.clone());
            (dag, record)
        });
        let (dag, record) = versions.next().expect("the file's DAG");
        Ok(Registered {
            dag,
            record,
            locals: versions.map(|(dag, _)| dag.name.clone()).collect(),
        })
    }

    fn cache(&self, digest: &str, dag: Arc<Dag>) {
        if let Ok(mut m) = self.specs.lock() {
            m.insert(digest.to_string(), dag);
        }
    }

    /// The DAG version with this digest (cached: versions never change).
    pub(crate) async fn spec(&self, digest: &str) -> Result<Option<Arc<Dag>>, ConnError> {
        if let Some(d) = self.specs.lock().ok().and_then(|m| m.get(digest).cloned()) {
            return Ok(Some(d));
        }
        let mut c = self.redis.conn().await?;
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.redis.keys().spec(digest))
            .query_async(&mut *c)
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let dag: Arc<Dag> = Arc::new(model::decode(&raw).map_err(encoding)?);
        self.cache(digest, dag.clone());
        Ok(Some(dag))
    }

    /// The current version of a DAG, by name.
    pub(crate) async fn dag(&self, name: &str) -> Result<Option<(DagRecord, Arc<Dag>)>, ConnError> {
        let mut c = self.redis.conn().await?;
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.redis.keys().dags())
            .arg(name)
            .query_async(&mut *c)
            .await?;
        drop(c);
        let Some(raw) = raw else { return Ok(None) };
        let record: DagRecord = model::decode(&raw).map_err(encoding)?;
        Ok(self.spec(&record.digest).await?.map(|d| (record, d)))
    }

    /// Whether each of `names` is a registered DAG (one HMGET of the registry).
    pub(crate) async fn registered(&self, names: &[&str]) -> Result<Vec<bool>, ConnError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("HMGET");
        get.arg(self.redis.keys().dags());
        for name in names {
            get.arg(*name);
        }
        let mut c = self.redis.conn().await?;
        let present: Vec<Option<Vec<u8>>> = get.query_async(&mut *c).await?;
        Ok(present.iter().map(Option::is_some).collect())
    }

    /// Every registered DAG, by name.
    pub(crate) async fn dags(&self) -> Result<BTreeMap<String, (DagRecord, Arc<Dag>)>, ConnError> {
        let mut c = self.redis.conn().await?;
        let all: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.redis.keys().dags())
            .query_async(&mut *c)
            .await?;
        drop(c);
        let mut out = BTreeMap::new();
        for (name, raw) in all {
            let record: DagRecord = model::decode(&raw).map_err(encoding)?;
            if let Some(dag) = self.spec(&record.digest).await? {
                out.insert(name, (record, dag));
            }
        }
        Ok(out)
    }

    /// One run, or `None` when it does not exist.
    pub(crate) async fn run(&self, id: &str) -> Result<Option<RunRecord>, ConnError> {
        Ok(self.runs(&[id.to_string()]).await?.pop().flatten())
    }

    /// Several runs in one pipeline of HGETALL; `None` for those that do not exist.
    pub(crate) async fn runs(&self, ids: &[String]) -> Result<Vec<Option<RunRecord>>, ConnError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.redis.keys().run(id));
        }
        let mut c = self.redis.conn().await?;
        let all: Vec<BTreeMap<String, Vec<u8>>> = pipe.query_async(&mut *c).await?;
        ids.iter()
            .zip(all)
            .map(|(id, fields)| RunRecord::from_fields(id, fields).map_err(encoding))
            .collect()
    }

    /// The status of each run (one pipeline of HGET); `None` for runs that do not exist.
    pub(crate) async fn statuses(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<RunStatus>>, ConnError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET")
                .arg(self.redis.keys().run(id))
                .arg(run_field::STATUS);
        }
        let mut c = self.redis.conn().await?;
        let all: Vec<Option<String>> = pipe.query_async(&mut *c).await?;
        Ok(all
            .into_iter()
            .map(|s| s.and_then(|s| s.parse().ok()))
            .collect())
    }

    /// Runs matching `filter`, newest first, and the cursor of the next page when there may be
    /// more. Walks the smallest index that applies by run id: the parent's children index
    /// (oldest first: creation order), the DAG's, the status's, or, for all runs, the five
    /// status indexes merged (a run is in exactly one of them; there is no index of all runs).
    /// Ids whose run hash is gone (deleted by retention) are skipped.
    pub(crate) async fn list_runs(
        &self,
        filter: &RunFilter,
    ) -> Result<(Vec<RunRecord>, Option<String>), ConnError> {
        let keys = self.redis.keys();
        let indexes: Vec<String> = match (&filter.parent, &filter.dag, filter.status) {
            (Some(parent), _, _) => vec![keys.children(parent)],
            (None, Some(dag), _) => vec![keys.runs_by_dag(dag)],
            (None, None, Some(st)) => vec![keys.runs_by_status(st.as_str())],
            (None, None, None) => RunStatus::ALL
                .iter()
                .map(|st| keys.runs_by_status(st.as_str()))
                .collect(),
        };
        let limit = filter.limit.max(1);
        let mut out = Vec::new();
        let mut cursor = filter.before.clone();
        // A DAG and a status together, or the trigger, params and time filters, filter the
        // index page by page; bound the walk.
        for _ in 0..50 {
            let ids = match filter.parent {
                Some(_) => {
                    self.index_page_after(&indexes[0], cursor.as_deref(), limit)
                        .await?
                }
                None => self.index_page(&indexes, cursor.as_deref(), limit).await?,
            };
            let exhausted = ids.len() < limit;
            cursor = ids.last().cloned();
            for run in self.runs(&ids).await?.into_iter().flatten() {
                if filter.matches(&run) && out.len() < limit {
                    out.push(run);
                }
            }
            if exhausted {
                return Ok((out, None));
            }
            if out.len() >= limit {
                let next = out.last().map(|r| r.id.clone());
                return Ok((out, next));
            }
        }
        Ok((out, cursor))
    }

    /// The newest `limit` run ids below `before` (all when `None`) over `indexes` (ZSETs of run
    /// ids, all scores 0), newest first: one `ZRANGE … BYLEX REV LIMIT` per index, in one
    /// `MULTI` when there are several (so a run moving between them is seen once), merged.
    async fn index_page(
        &self,
        indexes: &[String],
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ConnError> {
        let max = before
            .map(|c| format!("({c}"))
            .unwrap_or_else(|| "+".into());
        let mut pipe = redis::pipe();
        if indexes.len() > 1 {
            pipe.atomic();
        }
        for index in indexes {
            pipe.cmd("ZRANGE")
                .arg(index)
                .arg(&max)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let mut c = self.redis.conn().await?;
        let pages: Vec<Vec<String>> = pipe.query_async(&mut *c).await?;
        drop(c);
        Ok(merge_newest(pages, limit))
    }

    /// The oldest `limit` run ids above `after` (all when `None`) in `index` (a ZSET of run
    /// ids, all scores 0), oldest first: `ZRANGE … BYLEX LIMIT`.
    pub(super) async fn index_page_after(
        &self,
        index: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ConnError> {
        let min = after.map(|c| format!("({c}")).unwrap_or_else(|| "-".into());
        let mut c = self.redis.conn().await?;
        Ok(redis::cmd("ZRANGE")
            .arg(index)
            .arg(min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut *c)
            .await?)
    }

    /// Heartbeats of the live workers (their keys have not expired), by worker id.
    pub(crate) async fn workers(&self) -> Result<Vec<Heartbeat>, ConnError> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.workers())
            .arg(0)
            .arg(-1)
            .query_async(&mut *c)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for id in &ids {
            get.arg(keys.worker(id));
        }
        let beats: Vec<Option<Vec<u8>>> = get.query_async(&mut *c).await?;
        Ok(beats
            .into_iter()
            .flatten()
            .filter_map(|raw| model::decode(&raw).ok())
            .collect())
    }

    /// Runs a pipeline of script calls, reloading scripts when Redis lost them.
    pub(super) async fn script_pipeline(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, ConnError> {
        self.redis.script_pipeline(pipe).await
    }
}

/// The first `limit` ids of the union of `pages` (each sorted newest first, that is by id
/// descending), newest first, without duplicates.
fn merge_newest(pages: Vec<Vec<String>>, limit: usize) -> Vec<String> {
    let mut ids: Vec<String> = pages.into_iter().flatten().collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    ids.truncate(limit);
    ids
}

#[cfg(test)]
mod tests {
    use super::merge_newest;

    /// Only `store/` talks to Redis: no other source file of the crate names the `redis` crate
    /// (`redis::`) or a Redis pool (`deadpool_redis`), tests included; under `api/` not even
    /// the shared crate's Redis module.
    #[test]
    fn nothing_outside_the_store_issues_redis_commands() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let store = src.join("store");
        let offenders: Vec<String> = files
            .iter()
            .filter(|f| !f.starts_with(&store))
            .filter(|f| {
                let text = std::fs::read_to_string(f).expect("a source file is readable");
                // The shared crate's Redis module (connection and key types) may be named; the
                // redis crate itself (commands, pipelines) may not, and under api/ neither
                // (the issue's `grep -rl 'redis::' coordinator/src/api`).
                let api = f.starts_with(src.join("api"));
                let own = if api {
                    text
                } else {
                    text.replace("dagrid_shared::redis::", "")
                };
                own.contains("redis::") || own.contains("deadpool_redis")
            })
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            offenders.is_empty(),
            "Redis is used outside coordinator/src/store/: {offenders:?}; add a Store method"
        );
    }

    #[test]
    fn pages_of_several_indexes_merge_newest_first() {
        let page = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let merged = merge_newest(
            vec![
                page(&["09", "05", "01"]),
                page(&["08", "07"]),
                page(&[]),
                page(&["06"]),
            ],
            4,
        );
        assert_eq!(merged, page(&["09", "08", "07", "06"]));
        assert_eq!(
            merge_newest(vec![page(&["2"]), page(&["2", "1"])], 5),
            page(&["2", "1"])
        );
    }
}
