//! Connections to Redis: a deadpool pool for ordinary commands, dedicated connections for
//! blocking stream reads, and pipelines of script calls that survive a flushed script cache.

use std::time::Duration;

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, RedisError, Value};

use crate::keys::{Keys, COORDINATOR_GROUP, WORKER_GROUP};
use crate::scripts;

/// How long an ordinary command or pipeline may take before it fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a blocking stream read (XREADGROUP BLOCK) waits for an entry, at most.
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The URL does not parse or names an unsupported scheme.
    #[error("invalid Redis URL {url:?}: {source}; use redis://[user:password@]host:port[/db]")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        source: RedisError,
    },
    /// No connection could be taken from the pool.
    #[error("no Redis connection: {0}")]
    Pool(#[source] deadpool_redis::PoolError),
    /// A command failed.
    #[error("Redis command failed: {0}")]
    Redis(#[source] RedisError),
}

/// Counted in `dagrid_redis_errors_total` ([`count_error`]).
impl From<RedisError> for ConnError {
    fn from(e: RedisError) -> Self {
        count_error(&e);
        ConnError::Redis(e)
    }
}

/// Counted in `dagrid_redis_errors_total{kind="pool"}`, or by the kind of the connection
/// error behind it.
impl From<deadpool_redis::PoolError> for ConnError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        match &e {
            deadpool_redis::PoolError::Backend(r) => count_error(r),
            _ => crate::metrics::redis_error("pool"),
        }
        ConnError::Pool(e)
    }
}

/// Counts a failed Redis command or connection in `dagrid_redis_errors_total{kind}`
/// ([`crate::metrics::redis_error`]). Every [`RedisError`] that becomes a [`ConnError`] is
/// counted there; call this for one handled without becoming one.
pub fn count_error(e: &RedisError) {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        "connection"
    } else if matches!(e.kind(), redis::ErrorKind::Server(_)) {
        "server"
    } else {
        "other"
    };
    crate::metrics::redis_error(kind);
}

impl ConnError {
    /// True when the failure should pass if the same call is made again later: Redis is
    /// unreachable, closed the connection, timed out, is still loading its data after a
    /// restart (`LOADING`), or is failing over (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
    /// `READONLY`). False for what needs a fix: a bad URL, refused credentials, a wrong command.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnError::BadUrl { .. } => false,
            ConnError::Pool(deadpool_redis::PoolError::Timeout(_)) => true,
            ConnError::Pool(deadpool_redis::PoolError::Backend(e)) | ConnError::Redis(e) => {
                redis_transient(e)
            }
            ConnError::Pool(_) => false,
        }
    }

    /// True when Redis answered `NOGROUP`: a stream or its consumer group does not exist, for
    /// example because Redis restarted without persistence and lost every key. The groups must
    /// be made again ([`ensure_groups`]).
    pub fn is_no_group(&self) -> bool {
        match self {
            ConnError::Pool(deadpool_redis::PoolError::Backend(e)) | ConnError::Redis(e) => {
                e.code() == Some("NOGROUP")
            }
            _ => false,
        }
    }
}

fn redis_transient(e: &RedisError) -> bool {
    use redis::ServerErrorKind as S;
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly
            )
        )
}

/// A handle on one dagrid namespace in one Redis: the pool, a client for dedicated
/// connections, and the key names. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    client: redis::Client,
    keys: Keys,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("keys", &self.keys).finish()
    }
}

impl Redis {
    /// Opens a pool of at most `pool_size` connections to `url` for namespace `namespace`.
    /// Connections are made lazily; call [`Redis::ping`] to check the server answers.
    ///
    /// # Errors
    /// [`ConnError::BadUrl`] when the URL is invalid.
    pub fn open(url: &str, namespace: &str, pool_size: usize) -> Result<Self, ConnError> {
        let bad = |source| ConnError::BadUrl {
            url: url.to_string(),
            source,
        };
        let client = redis::Client::open(url).map_err(bad)?;
        let mut config = PoolConfig::from_url(url);
        config.pool = Some(deadpool_redis::PoolConfig {
            max_size: pool_size.max(1),
            timeouts: deadpool_redis::Timeouts {
                wait: Some(RESPONSE_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(CONNECT_TIMEOUT),
            },
            ..Default::default()
        });
        let manager =
            deadpool_redis::Manager::new_with_config(url, connection_config(RESPONSE_TIMEOUT))
                .map_err(bad)?;
        let pool = Pool::builder(manager)
            .config(config.get_pool_config())
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                bad(RedisError::from((
                    redis::ErrorKind::Io,
                    "pool",
                    e.to_string(),
                )))
            })?;
        Ok(Self {
            pool,
            client,
            keys: Keys::new(namespace),
        })
    }

    /// The key names of this namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A pooled connection, returned to the pool on drop.
    ///
    /// # Errors
    /// [`ConnError::Pool`] when none can be had within the pool timeouts.
    pub async fn conn(&self) -> Result<deadpool_redis::Connection, ConnError> {
        Ok(self.pool.get().await?)
    }

    /// A dedicated connection for blocking reads: its response timeout exceeds
    /// [`BLOCK_TIMEOUT`], and nothing else queues behind its blocked command.
    ///
    /// # Errors
    /// [`ConnError::Redis`] when Redis cannot be reached.
    pub async fn blocking_conn(&self) -> Result<MultiplexedConnection, ConnError> {
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config(
                BLOCK_TIMEOUT + RESPONSE_TIMEOUT,
            ))
            .await?)
    }

    /// PING, to check the server answers.
    ///
    /// # Errors
    /// [`ConnError`] when it does not.
    pub async fn ping(&self) -> Result<(), ConnError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut *c).await?;
        Ok(())
    }

    /// Runs a pipeline made of script calls (`invoke_script`); when Redis answers NOSCRIPT (its
    /// script cache was flushed, for example by a restart) loads every script and runs the
    /// pipeline once more. Returns one reply per call.
    ///
    /// A NOSCRIPT reply means that call did not run, so running it again is safe.
    ///
    /// # Errors
    /// [`ConnError`] when a call fails for another reason.
    pub async fn script_pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>, ConnError> {
        let mut c = self.conn().await?;
        match pipe.query_async::<Vec<Value>>(&mut *c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                load_scripts(&mut c).await?;
                Ok(pipe.query_async(&mut *c).await?)
            }
            other => Ok(other?),
        }
    }
}

/// Loads every script of [`crate::scripts`] (SCRIPT LOAD) in one pipeline.
///
/// # Errors
/// [`ConnError::Redis`] when a script does not load.
pub async fn load_scripts(c: &mut deadpool_redis::Connection) -> Result<(), ConnError> {
    let mut pipe = redis::pipe();
    for s in scripts::all() {
        pipe.load_script(s);
    }
    pipe.query_async::<()>(&mut **c).await?;
    Ok(())
}

fn connection_config(response_timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
}

/// Creates a stream's consumer group at the stream's start (XGROUP CREATE … 0 MKSTREAM), doing
/// nothing when it exists already (BUSYGROUP).
///
/// # Errors
/// [`ConnError`] for any other failure.
pub async fn ensure_group(redis: &Redis, stream: &str, group: &str) -> Result<(), ConnError> {
    create_group(redis, stream, group).await.map(|_| ())
}

/// Creates every consumer group of the namespace that is missing: the workers' group on each
/// ready stream ([`Keys::ready_levels`], [`WORKER_GROUP`]) and the coordinators' group on the
/// results stream ([`Keys::results`], [`COORDINATOR_GROUP`]), each at its stream's start, so
/// entries added before the group was made are still delivered. Returns how many groups had
/// to be made: 0 when all existed; more after Redis lost its data (a restart without
/// persistence, a FLUSHALL), when readers get `NOGROUP`.
///
/// # Errors
/// [`ConnError`] when Redis refuses or cannot be reached.
pub async fn ensure_groups(redis: &Redis) -> Result<usize, ConnError> {
    let keys = redis.keys();
    let mut made = 0;
    for ready in keys.ready_levels() {
        made += usize::from(create_group(redis, &ready, WORKER_GROUP).await?);
    }
    made += usize::from(create_group(redis, &keys.results(), COORDINATOR_GROUP).await?);
    Ok(made)
}

/// XGROUP CREATE … 0 MKSTREAM; true when the group was made, false when it existed.
async fn create_group(redis: &Redis, stream: &str, group: &str) -> Result<bool, ConnError> {
    let mut c = redis.conn().await?;
    let res = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut *c)
        .await;
    match res {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(true),
    }
}

/// Acknowledges and deletes stream entries that are done with or can never apply (XACK then
/// XDEL, in one MULTI so an entry is never left deleted but pending, or acknowledged but kept).
///
/// # Errors
/// [`ConnError`] when Redis refuses or cannot be reached; the entries then stay pending.
pub async fn ack_and_delete(
    redis: &Redis,
    stream: &str,
    group: &str,
    ids: &[String],
) -> Result<(), ConnError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut c = redis.conn().await?;
    redis::pipe()
        .atomic()
        .cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(ids)
        .ignore()
        .query_async::<()>(&mut *c)
        .await?;
    Ok(())
}
