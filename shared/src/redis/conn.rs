//! Connections to Redis: one shared multiplexed connection for ordinary commands, pipelines
//! and scripts (no check per use: a connection that fails is dropped and made again by the
//! next caller), dedicated connections for blocking stream reads, and pipelines of script
//! calls that survive a flushed script cache.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::redis::keys::{Keys, COORDINATOR_GROUP, WORKER_GROUP};
use crate::redis::scripts;

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
    #[error("invalid Redis URL {url:?}: {source}; use redis://[user:password@]host:port[/db] (rediss:// for TLS)")]
    BadUrl {
        /// The URL given, its password hidden ([`redact_url`]).
        url: String,
        /// Why it is invalid.
        source: RedisError,
    },
    /// A command failed.
    #[error("Redis command failed: {0}")]
    Redis(#[source] RedisError),
    /// A `rediss://` connection could not be made: the server does not speak TLS on that port
    /// (the handshake times out or gets garbage) or its certificate is not trusted.
    #[error("no TLS connection to Redis at {url}: {cause}; {hint}")]
    Tls {
        /// The URL, its password hidden.
        url: String,
        /// What failed.
        cause: String,
        /// The likely fix.
        hint: &'static str,
        /// Whether waiting may fix it (a slow server), unlike an untrusted certificate.
        transient: bool,
    },
}

/// Counted in `dagrid_redis_errors_total` ([`count_error`]).
impl From<RedisError> for ConnError {
    fn from(e: RedisError) -> Self {
        count_error(&e);
        ConnError::Redis(e)
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

/// The fix when a `rediss://` handshake gets no TLS answer.
const NOT_TLS_HINT: &str = "with rediss:// the port must be one where the server speaks TLS (redis-server --tls-port); use redis:// for a server without TLS";
/// The fix when the server's certificate is refused.
const UNTRUSTED_HINT: &str = "the server's certificate is not trusted: point SSL_CERT_FILE (a PEM bundle) or SSL_CERT_DIR at the CA that signed it, and check that the URL's host is a name or IP address of the certificate";

impl ConnError {
    /// True when the failure should pass if the same call is made again later: Redis is
    /// unreachable, closed the connection, timed out, is still loading its data after a
    /// restart (`LOADING`), or is failing over (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
    /// `READONLY`). False for what needs a fix: a bad URL, refused credentials, a wrong command.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnError::BadUrl { .. } => false,
            ConnError::Redis(e) => redis_transient(e),
            ConnError::Tls { transient, .. } => *transient,
        }
    }

    /// True when the connection was closed or reset under the call (not a timeout): a new
    /// connection may well work at once.
    pub fn is_dropped(&self) -> bool {
        match self {
            ConnError::Redis(e) => {
                e.is_connection_dropped() || (e.is_io_error() && !e.is_timeout())
            }
            _ => false,
        }
    }

    /// True when Redis answered `NOGROUP`: a stream or its consumer group does not exist, for
    /// example because Redis restarted without persistence and lost every key. The groups must
    /// be made again ([`ensure_groups`]).
    pub fn is_no_group(&self) -> bool {
        match self {
            ConnError::Redis(e) => e.code() == Some("NOGROUP"),
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

/// A handle on one dagrid namespace in one Redis: the shared connection for ordinary
/// commands, a client for dedicated connections, and the key names. Cheap to clone; clones
/// share the connection.
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
    client: redis::Client,
    /// The URL and namespace as given, to open a named copy ([`Redis::named`]).
    url: String,
    namespace: String,
    /// The client name every connection gets (`CLIENT SETNAME`), if any.
    name: Option<String>,
    keys: Keys,
    /// The URL with its password hidden, for error messages.
    shown_url: String,
    /// `rediss://`: connections use TLS.
    tls: bool,
}

/// The connection that [`Redis::conn`] hands out, shared by every clone of one handle.
struct Shared {
    /// The live connection and its generation (a number that changes with every new
    /// connection, so a failure seen on an old one never drops its successor).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while a connection is made, so concurrent callers make one, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// How many connections were tried; with `last_error`, lets callers that waited for a
    /// failed attempt fail with it instead of each trying again in turn.
    attempts: AtomicU64,
    /// Why the latest attempt failed.
    last_error: Mutex<Option<RedisError>>,
}

impl Shared {
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Called with every error of a command sent on connection `generation`: an error of the
    /// connection itself (closed, reset, timed out) drops it, so the next [`Redis::conn`]
    /// makes a new one. A server's error reply (a wrong command, NOSCRIPT, LOADING) keeps it.
    fn failed(&self, generation: u64, e: &RedisError) {
        if !(e.is_connection_dropped()
            || e.is_io_error()
            || e.is_timeout()
            || e.is_unrecoverable_error())
        {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

/// A connection from [`Redis::conn`]: a clone of the handle's shared multiplexed connection,
/// so taking one costs no round trip and no lock held while a command runs. Commands and
/// pipelines from many tasks share the socket (pipelined by redis-rs); a `MULTI` pipeline is
/// sent as one block, so it stays atomic. Never send a blocking command on it (use
/// [`Redis::blocking_conn`]). Use it as `&mut c` or `&mut *c` wherever redis-rs takes a
/// connection ([`ConnectionLike`]).
pub struct Conn(TrackedConnection);

/// What a [`Conn`] dereferences to: the multiplexed connection, watched so that a command
/// failing with a connection error drops it from the handle ([`Redis::conn`] makes a new one).
pub struct TrackedConnection {
    conn: MultiplexedConnection,
    generation: u64,
    shared: Arc<Shared>,
}

impl Conn {
    /// Another handle on this same connection (not a new one): commands sent through either
    /// share its socket, so they reach Redis, and run, in the order they were sent.
    pub fn same(&self) -> Conn {
        Conn(TrackedConnection {
            conn: self.0.conn.clone(),
            generation: self.0.generation,
            shared: Arc::clone(&self.0.shared),
        })
    }
}

impl Deref for Conn {
    type Target = TrackedConnection;
    fn deref(&self) -> &TrackedConnection {
        &self.0
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut TrackedConnection {
        &mut self.0
    }
}

impl ConnectionLike for TrackedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = self.conn.send_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.shared.failed(self.generation, e);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let reply = self
                .conn
                .send_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &reply {
                self.shared.failed(self.generation, e);
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("keys", &self.keys).finish()
    }
}

impl Redis {
    /// Opens a handle on `url` for namespace `namespace`. Ordinary commands of the handle and
    /// its clones share one multiplexed connection, made at first use. Call [`Redis::ping`] to
    /// check the server answers.
    ///
    /// # Errors
    /// [`ConnError::BadUrl`] when the URL is invalid.
    pub fn open(url: &str, namespace: &str) -> Result<Self, ConnError> {
        Self::open_as(url, namespace, None)
    }

    /// A copy of this handle whose every connection, shared or dedicated, including the ones
    /// made again after a connection drops, names itself `name` (`CLIENT SETNAME`, sent as
    /// soon as it is made): a worker names its connections with its id
    /// ([`crate::redis::keys::worker_client_name`]) so that the reaper sees when it has none left. It
    /// has its own shared connection, made lazily.
    ///
    /// # Errors
    /// [`ConnError::BadUrl`] when the URL is invalid (never, for a handle that opened).
    pub fn named(&self, name: &str) -> Result<Self, ConnError> {
        Self::open_as(&self.url, &self.namespace, Some(name.to_string()))
    }

    fn open_as(url: &str, namespace: &str, name: Option<String>) -> Result<Self, ConnError> {
        let client = redis::Client::open(url).map_err(|source| ConnError::BadUrl {
            url: redact_url(url),
            source,
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
            client,
            url: url.to_string(),
            namespace: namespace.to_string(),
            name,
            keys: Keys::new(namespace),
            shown_url: redact_url(url),
            tls: url.starts_with("rediss://") || url.starts_with("valkeys://"),
        })
    }

    /// The key names of this namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The shared connection, made (and named) first when there is none: at first use, or
    /// after a command on the previous one failed with a connection error. No round trip when
    /// it exists. Callers that wait while another one connects, and see that attempt fail,
    /// fail with its error rather than each trying again in turn.
    ///
    /// # Errors
    /// [`ConnError::Redis`] (or [`ConnError::Tls`]) when no connection can be made within
    /// [`CONNECT_TIMEOUT`].
    pub async fn conn(&self) -> Result<Conn, ConnError> {
        if let Some((generation, conn)) = self.shared.current() {
            return Ok(self.wrap(generation, conn));
        }
        let tried = self.shared.attempts.load(Ordering::Acquire);
        let _connecting = self.shared.connecting.lock().await;
        if let Some((generation, conn)) = self.shared.current() {
            return Ok(self.wrap(generation, conn));
        }
        if self.shared.attempts.load(Ordering::Acquire) != tried {
            let last = self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(e) = last {
                return Err(self.tls_error(e.into()));
            }
        }
        let generation = self.shared.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        match self.connect(RESPONSE_TIMEOUT).await {
            Ok(conn) => {
                // A waiter that sees a newer attempt than its own must not take the error of an
                // older one for it.
                *self
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                *self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
                Ok(self.wrap(generation, conn))
            }
            Err(e) => {
                *self
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                Err(self.tls_error(e.into()))
            }
        }
    }

    fn wrap(&self, generation: u64, conn: MultiplexedConnection) -> Conn {
        Conn(TrackedConnection {
            conn,
            generation,
            shared: self.shared.clone(),
        })
    }

    /// A new multiplexed connection whose commands time out after `response_timeout`, named
    /// with `CLIENT SETNAME` when the handle has a name.
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let mut c = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config(response_timeout))
            .await?;
        if let Some(name) = &self.name {
            set_name(&mut c, name).await?;
        }
        Ok(c)
    }

    /// With `rediss://`, turns a failure to connect that comes from TLS (no TLS answer, an
    /// untrusted certificate) into [`ConnError::Tls`], which says how to fix it.
    fn tls_error(&self, e: ConnError) -> ConnError {
        if !self.tls {
            return e;
        }
        let text = e.to_string();
        let (hint, transient) = match &e {
            ConnError::Redis(r) if r.is_timeout() => (NOT_TLS_HINT, true),
            _ if text.contains("certificate") => (UNTRUSTED_HINT, false),
            _ if text.contains("corrupt message") || text.contains("InvalidContentType") => {
                (NOT_TLS_HINT, false)
            }
            _ => return e,
        };
        let cause = match &e {
            ConnError::Redis(r) if r.is_timeout() => {
                format!("connecting timed out after {CONNECT_TIMEOUT:?}")
            }
            ConnError::Redis(r) => r.to_string(),
            other => other.to_string(),
        };
        ConnError::Tls {
            url: self.shown_url.clone(),
            cause,
            hint,
            transient,
        }
    }

    /// A dedicated connection for blocking reads: its response timeout exceeds
    /// [`BLOCK_TIMEOUT`], and nothing else queues behind its blocked command.
    ///
    /// # Errors
    /// [`ConnError::Redis`] when Redis cannot be reached.
    pub async fn blocking_conn(&self) -> Result<MultiplexedConnection, ConnError> {
        self.connect(BLOCK_TIMEOUT + RESPONSE_TIMEOUT)
            .await
            .map_err(|e| self.tls_error(e.into()))
    }

    /// A connection of its own, not the shared one ([`Redis::conn`]), whose commands time out
    /// like the shared one's: for a caller that keeps several pipelines in flight and needs
    /// them run in the order it sent them, which holds only while nothing else shares the
    /// connection's queue (see `Store::submit`). Closed when its last handle is dropped. A
    /// failure on it does not drop the shared connection.
    ///
    /// # Errors
    /// [`ConnError::Redis`] (or [`ConnError::Tls`]) when no connection can be made within
    /// [`CONNECT_TIMEOUT`].
    pub async fn own_conn(&self) -> Result<Conn, ConnError> {
        let conn = self
            .connect(RESPONSE_TIMEOUT)
            .await
            .map_err(|e| self.tls_error(e.into()))?;
        // Generation 0 is never the shared connection's (those count from 1).
        Ok(self.wrap(0, conn))
    }

    /// PING, to check the server answers.
    ///
    /// # Errors
    /// [`ConnError`] when it does not.
    pub async fn ping(&self) -> Result<(), ConnError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut c).await?;
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
        script_pipeline_on(&mut c, pipe).await
    }
}

/// [`Redis::script_pipeline`] on the connection `c`: pipelines sent on one connection (or on
/// handles of it, [`Conn::same`]) run in the order they were first polled.
///
/// # Errors
/// [`ConnError`] when a call fails for another reason than NOSCRIPT.
pub async fn script_pipeline_on(c: &mut Conn, pipe: &Pipeline) -> Result<Vec<Value>, ConnError> {
    match pipe.query_async::<Vec<Value>>(c).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            load_scripts(c).await?;
            Ok(pipe.query_async(c).await?)
        }
        other => Ok(other?),
    }
}

/// Set once Redis accepted a `CLIENT SETNAME` of this process.
static NAME_ACCEPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once Redis refused a `CLIENT SETNAME` of this process.
static NAME_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when this process's connections carry their client name: Redis accepted a
/// `CLIENT SETNAME` and never refused one. A worker says so in its heartbeats
/// (`Heartbeat::named`); only then may the reaper take a worker without named connections
/// for dead before its lease.
pub fn connections_named() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    NAME_ACCEPTED.load(Relaxed) && !NAME_REFUSED.load(Relaxed)
}

/// `CLIENT SETNAME <name>` on a new connection. A server that refuses the command (an ACL
/// without `client|setname`, a managed service that renamed it) gets a warning, once per
/// process, and the connection is kept unnamed: [`connections_named`] turns false, the
/// worker's heartbeats say so, and only the lease tells its death.
///
/// # Errors
/// When the connection fails (a transient error; the caller makes another).
async fn set_name(c: &mut MultiplexedConnection, name: &str) -> Result<(), RedisError> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async::<()>(c)
        .await
    {
        Ok(()) => {
            NAME_ACCEPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
            NAME_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
            WARNED.call_once(|| {
                tracing::warn!(cause = %e, client.name = name, "Redis refused CLIENT SETNAME; coordinators will see this worker's death only when its lease expires (allow client|setname for the worker's user)");
            });
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `url` with its password replaced by `***`, for logs and error messages:
/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`. The user info runs to
/// the last `@` (a password may hold an unencoded `/`, `?` or `#`), and the values of the
/// `pass` and `password` query parameters (redis-rs reads a unix socket URL's password from
/// `?pass=`) are hidden too. A user name alone (`redis://user@host`) is kept; text that is not
/// a URL is returned as is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let mut out = format!("{scheme}://");
    // A unix socket URL has no user part (its password is `?pass=`, whose value may hold an
    // `@`); a TCP URL's user part ends at the last `@`.
    let unix = scheme == "unix" || scheme == "redis+unix";
    let after = match rest.rsplit_once('@').filter(|_| !unix) {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => {
                    out.push_str(userinfo);
                    out.push('@');
                }
            }
            after
        }
        None => rest,
    };
    match after.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k == "pass" || k == "password" => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(path);
            out.push('?');
            out.push_str(&params.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(after),
    }
    out
}

/// Sends `pipe` on `c` and returns one reply per command not ignored. An empty pipeline (a
/// batch built from an empty list) answers an empty list without a round trip: redis-rs
/// refuses to send one ("empty command").
///
/// # Errors
/// When the call fails; counted like every [`ConnError`].
pub async fn query_pipeline<T: redis::FromRedisValue>(
    c: &mut Conn,
    pipe: &redis::Pipeline,
) -> Result<Vec<T>, ConnError> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    Ok(pipe.query_async(c).await?)
}

/// Loads every script of [`crate::redis::scripts`] (SCRIPT LOAD) in one pipeline.
///
/// # Errors
/// [`ConnError::Redis`] when a script does not load.
pub async fn load_scripts(c: &mut Conn) -> Result<(), ConnError> {
    let mut pipe = redis::pipe();
    for s in scripts::all() {
        pipe.load_script(s);
    }
    pipe.query_async::<()>(c).await?;
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

/// The worker selectors registered ([`Keys::selectors`]), sorted.
///
/// # Errors
/// [`ConnError`] when Redis refuses or cannot be reached.
pub async fn selectors(redis: &Redis) -> Result<Vec<String>, ConnError> {
    let mut c = redis.conn().await?;
    let mut all: Vec<String> = redis::cmd("SMEMBERS")
        .arg(redis.keys().selectors())
        .query_async(&mut *c)
        .await?;
    all.sort();
    Ok(all)
}

/// Every ready stream with its level: the plain ones ([`Keys::ready_levels`]), then those of
/// each registered worker selector ([`Keys::ready_of`]), each group highest level first.
///
/// # Errors
/// [`ConnError`] when Redis refuses or cannot be reached.
pub async fn all_ready_streams(
    redis: &Redis,
) -> Result<Vec<(crate::dag::Priority, String)>, ConnError> {
    let keys = redis.keys();
    let mut all = keys.ready_levels_of("");
    for selector in selectors(redis).await? {
        all.extend(keys.ready_levels_of(&selector));
    }
    Ok(all)
}

/// Registers worker selector `selector` (canonical, not empty): adds it to [`Keys::selectors`]
/// and makes the workers' group on each of its ready streams if missing.
///
/// # Errors
/// [`ConnError`] when Redis refuses or cannot be reached.
pub async fn register_selector(redis: &Redis, selector: &str) -> Result<(), ConnError> {
    let keys = redis.keys();
    for (_, ready) in keys.ready_levels_of(selector) {
        create_group(redis, &ready, WORKER_GROUP).await?;
    }
    let mut c = redis.conn().await?;
    redis::cmd("SADD")
        .arg(keys.selectors())
        .arg(selector)
        .query_async::<()>(&mut *c)
        .await?;
    Ok(())
}

/// Creates every consumer group of the namespace that is missing: the workers' group on each
/// ready stream ([`all_ready_streams`], [`WORKER_GROUP`]) and the coordinators' group on the
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
    for (_, ready) in all_ready_streams(redis).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://alice:p@ss:w@h:6380", "rediss://alice:***@h:6380"),
            ("redis://alice@h", "redis://alice@h"),
            ("redis://u:p@h/2?x=1", "redis://u:***@h/2?x=1"),
            ("redis://u:pa/ss?w#d@h:6379", "redis://u:***@h:6379"),
            (
                "unix:///run/redis.sock?db=1&pass=s3cret",
                "unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis+unix:///run/r.sock?password=s3cret#x",
                "redis+unix:///run/r.sock?password=***#x",
            ),
            (
                "unix:///run/r.sock?pass=p@ss&db=1",
                "unix:///run/r.sock?pass=***&db=1",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let e = Redis::open("nope://u:topsecret@h", "t").unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    /// `cmdstat_<name>` calls from `INFO commandstats`, 0 when the command never ran.
    async fn calls(c: &mut Conn, name: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Taking a connection costs no round trip: 200 checkouts from clones of one handle send
    /// no PING and no UNWATCH, and share one connection.
    #[tokio::test]
    async fn a_checkout_sends_nothing() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "t").unwrap();
        let mut c = redis.conn().await.unwrap();
        let (pings, unwatches) = (calls(&mut c, "ping").await, calls(&mut c, "unwatch").await);
        drop(c);
        for i in 0..200 {
            let r = redis.clone();
            let mut c = r.conn().await.unwrap();
            redis::cmd("SET")
                .arg("k")
                .arg(i)
                .query_async::<()>(&mut *c)
                .await
                .unwrap();
        }
        let mut c = redis.conn().await.unwrap();
        assert_eq!(calls(&mut c, "ping").await, pings);
        assert_eq!(calls(&mut c, "unwatch").await, unwatches);
        assert_eq!(calls(&mut c, "set").await, 200);
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(clients.lines().count(), 1, "{clients}");
    }

    /// A shared connection that Redis closed is made again, named again, at the next use; a
    /// failure seen on it affects that one command at most; Redis restarting is survived too.
    #[tokio::test]
    async fn a_dropped_connection_is_made_again_with_its_name() {
        let mut server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "t")
            .unwrap()
            .named("w-1")
            .unwrap();
        let url = server.url();
        // A new admin connection for each look, so Redis restarting breaks none of them.
        let named = || async {
            let mut a = Redis::open(&url, "t").unwrap().conn().await.unwrap();
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg("normal")
                .query_async(&mut a)
                .await
                .unwrap();
            list.lines().filter(|l| l.contains(" name=w-1 ")).count()
        };
        let ping = || async { redis.ping().await };
        ping().await.unwrap();
        assert_eq!(named().await, 1);
        let mut a = Redis::open(&url, "t").unwrap().conn().await.unwrap();
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg("default")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut a)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        // At most one command sees the dead connection; then a new named one serves.
        if let Err(e) = ping().await {
            assert!(e.is_transient(), "{e}");
        }
        ping().await.unwrap();
        assert_eq!(named().await, 1);

        server.restart().await.expect("redis-server restarts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ping().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(named().await, 1);
    }
}
