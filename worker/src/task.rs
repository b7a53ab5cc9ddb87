//! From a ready entry to the [`StepTask`] the worker runs. An entry's field `t` is a compact
//! [`TaskRef`] (see [`dagrid_shared::ready`]): the worker resolves the step's definition from
//! the immutable DAG version `{ns}:spec:<digest>` through a small bounded cache
//! ([`SpecCache`], one `GET` on a miss; versions never change, so entries never go stale) and
//! builds the same task the coordinator planned. An entry in the older whole-task form (left in
//! Redis by a previous version) is run as it is.
//!
//! An attempt whose DAG version cannot be read (the spec key is gone, or Redis keeps failing)
//! is reported failed with a message saying why, so its run moves on instead of hanging.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use dagrid_shared::dag::Dag;
use dagrid_shared::model::{self, StepTask};
use dagrid_shared::ready::{self, ReadyTask, TaskRef};
use dagrid_shared::Redis;

/// DAG versions a worker keeps decoded ([`SPECS`]); the oldest goes first beyond this.
pub(crate) const SPEC_CACHE_CAPACITY: usize = 64;

/// Tries of the `GET` of a DAG version before the attempt is failed, and the pause after each
/// failed try.
const SPEC_READ_BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// The worker's cache of DAG versions, by spec key.
pub(crate) static SPECS: LazyLock<SpecCache> =
    LazyLock::new(|| SpecCache::new(SPEC_CACHE_CAPACITY));

/// A bounded cache of decoded DAG versions, keyed by their Redis key (`{ns}:spec:<digest>`),
/// evicting the oldest entry first (versions are immutable, so an entry is never stale).
#[derive(Debug)]
pub(crate) struct SpecCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    specs: HashMap<String, Arc<Dag>>,
    order: VecDeque<String>,
}

impl SpecCache {
    /// An empty cache holding at most `capacity` versions.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Dag>> {
        self.inner.lock().ok()?.specs.get(key).cloned()
    }

    fn put(&self, key: &str, dag: Arc<Dag>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.specs.insert(key.to_string(), dag).is_none() {
            inner.order.push_back(key.to_string());
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.specs.remove(&old);
                }
            }
        }
    }

    /// How many versions are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.specs.len())
    }

    /// The DAG version `digest` of namespace `redis`: cached, else one `GET`, retried after a
    /// Redis error per [`SPEC_READ_BACKOFF`].
    ///
    /// # Errors
    /// `(transient, message)`: not transient when the key is missing or does not decode (the
    /// attempt can never run); transient when Redis failed on every try (the attempt is handed
    /// back, to run once Redis answers).
    pub(crate) async fn spec(
        &self,
        redis: &Redis,
        digest: &str,
    ) -> Result<Arc<Dag>, (bool, String)> {
        let key = redis.keys().spec(digest);
        if let Some(dag) = self.get(&key) {
            return Ok(dag);
        }
        let mut last = String::new();
        for pause in SPEC_READ_BACKOFF {
            match read_spec(redis, &key).await {
                Ok(Some(raw)) => {
                    let dag: Dag = model::decode(&raw).map_err(|e| {
                        (
                            false,
                            format!("its DAG version {digest} ({key}) does not decode: {e}"),
                        )
                    })?;
                    let dag = Arc::new(dag);
                    self.put(&key, dag.clone());
                    return Ok(dag);
                }
                Ok(None) => {
                    return Err((
                        false,
                        format!(
                            "its DAG version {digest} is gone from Redis ({key} is missing), so \
                             the step's definition is unknown; submit the run again"
                        ),
                    ))
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(pause).await;
        }
        Err((
            true,
            format!("its DAG version {digest} could not be read from Redis ({key}): {last}"),
        ))
    }
}

async fn read_spec(redis: &Redis, key: &str) -> Result<Option<Vec<u8>>, String> {
    let mut c = redis.conn().await.map_err(|e| e.to_string())?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut *c)
        .await
        .map_err(|e| e.to_string())
}

/// Why a ready entry does not give a task to run.
#[derive(Debug)]
pub(crate) enum Unrunnable {
    /// The bytes are no task at all: nothing to report on; the entry is discarded.
    Undecodable(String),
    /// The attempt is known but cannot run (its DAG version is missing, does not decode or
    /// lacks the step): it is reported failed with this message.
    Failed(Box<StepTask>, String),
    /// The attempt's DAG version could not be read because Redis failed: the attempt is handed
    /// back (`Released`, no attempt counted) and runs again once Redis answers.
    Unavailable(Box<StepTask>, String),
}

/// The task of field `t` of a ready entry: a [`TaskRef`] resolved against its DAG version
/// (through `cache`), or a whole task of the older form as it is.
///
/// # Errors
/// [`Unrunnable`]: bytes of neither form, or an attempt whose DAG version cannot be used.
pub(crate) async fn resolve(
    cache: &SpecCache,
    redis: &Redis,
    bytes: &[u8],
) -> Result<StepTask, Unrunnable> {
    match ready::decode(bytes).map_err(Unrunnable::Undecodable)? {
        ReadyTask::Full(task) => Ok(*task),
        ReadyTask::Ref(r) => resolve_ref(cache, redis, &r).await,
    }
}

async fn resolve_ref(
    cache: &SpecCache,
    redis: &Redis,
    r: &TaskRef,
) -> Result<StepTask, Unrunnable> {
    let dag = cache
        .spec(redis, &r.spec)
        .await
        .map_err(|(transient, why)| {
            if transient {
                Unrunnable::Unavailable(Box::new(r.unresolved()), why)
            } else {
                Unrunnable::Failed(Box::new(r.unresolved()), why)
            }
        })?;
    r.resolve(&dag)
        .map_err(|why| Unrunnable::Failed(Box::new(r.unresolved()), why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrid_shared::dag::Priority;

    const DAG: &str = "name: t\nparams:\n  - N: 0\nenv:\n  - A: a\nsteps:\n  - name: s\n    command: echo $N\n    env:\n      - B: ${A}b\n";

    fn task_ref(spec: &str) -> TaskRef {
        TaskRef {
            run_id: "run-1".into(),
            step: "s".into(),
            attempt: 2,
            token: "tok".into(),
            priority: Priority::default(),
            queued_ms: 7,
            spec: spec.into(),
            params: vec![(Some("N".into()), "5".into())],
            run_status: None,
            outputs: vec![("OUT".into(), "x".into())],
            dag_gate: false,
            ignore_preconditions: false,
            repeats: 0,
            evaluate: false,
            resolved: None,
        }
    }

    /// A miss reads the version once and caches it; a hit needs no Redis (the key is deleted
    /// between the two); a missing version fails the attempt with a message naming it; the
    /// cache keeps at most its capacity.
    #[tokio::test]
    async fn spec_cache_miss_hit_and_missing_version() {
        let server = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "tk").unwrap();
        let dag = Dag::parse(DAG, "t").unwrap();
        let mut c = redis.conn().await.unwrap();
        redis::cmd("SET")
            .arg(redis.keys().spec("v1"))
            .arg(model::encode(&dag).unwrap())
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let cache = SpecCache::new(1);
        let bytes = model::encode(&task_ref("v1")).unwrap();
        let task = resolve(&cache, &redis, &bytes).await.expect("resolves");
        assert_eq!(task.command.as_deref(), Some("echo $N"));
        assert_eq!(task.args, ["5"]);
        let env: Vec<(&str, &str)> = task
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("DAG_NAME", "t"),
                ("DAG_RUN_ID", "run-1"),
                ("DAG_RUN_STEP_NAME", "s"),
                ("N", "5"),
                ("A", "a"),
                ("OUT", "x"),
                ("B", "${A}b")
            ]
        );
        assert_eq!(task.expand, [4, 6]);
        assert_eq!(cache.len(), 1);
        redis::cmd("DEL")
            .arg(redis.keys().spec("v1"))
            .query_async::<()>(&mut *c)
            .await
            .unwrap();
        let again = resolve(&cache, &redis, &bytes).await.expect("a hit");
        assert_eq!(again, task);
        let gone = model::encode(&task_ref("v2")).unwrap();
        match resolve(&cache, &redis, &gone).await {
            Err(Unrunnable::Failed(t, why)) => {
                assert_eq!(
                    (t.run_id.as_str(), t.step.as_str(), t.attempt),
                    ("run-1", "s", 2)
                );
                assert_eq!(t.token, "tok");
                assert!(why.contains("v2") && why.contains("missing"), "{why}");
            }
            other => panic!("a missing version fails the attempt: {other:?}"),
        }
        assert!(matches!(
            resolve(&cache, &redis, b"\x01junk").await,
            Err(Unrunnable::Undecodable(_))
        ));
        // A whole task of the older form runs as it is.
        let old = ready::TaskRef::resolve(&task_ref("v1"), &dag).unwrap();
        let old_bytes = model::encode(&old).unwrap();
        assert_eq!(resolve(&cache, &redis, &old_bytes).await.unwrap(), old);
    }

    /// A version that Redis cannot give (nothing listens) hands the attempt back instead of
    /// failing it: a Redis outage must not use up an attempt.
    #[tokio::test]
    async fn an_unreadable_version_hands_the_attempt_back() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = Redis::open(&format!("redis://127.0.0.1:{port}"), "tk").unwrap();
        let cache = SpecCache::new(4);
        let bytes = model::encode(&task_ref("v9")).unwrap();
        match resolve(&cache, &redis, &bytes).await {
            Err(Unrunnable::Unavailable(t, why)) => {
                assert_eq!((t.run_id.as_str(), t.attempt), ("run-1", 2));
                assert!(why.contains("could not be read"), "{why}");
            }
            other => panic!("an outage hands the attempt back: {other:?}"),
        }
    }
}
