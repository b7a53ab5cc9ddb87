//! The HTTP server under the API: an accept loop over hyper's HTTP/1 connections, so that every
//! connection has deadlines and their number is capped (`axum::serve` has neither).
//!
//! - A request head must arrive within [`HttpLimits::header_read_timeout`] of the connection
//!   starting to wait for it (a new connection, or a kept-alive one between requests), else
//!   the connection is closed (hyper's `header_read_timeout`): slowloris clients and idle
//!   kept-alive connections go.
//! - A request body that sends nothing for [`HttpLimits::body_read_timeout`] fails with 400
//!   `body_read_failed` (tower-http's `RequestBodyTimeoutLayer`).
//! - A connection on which no byte is read or written for [`HttpLimits::idle_timeout`] is
//!   closed, whatever it is doing (a client that stopped reading its response or its event
//!   stream included).
//! - At most [`HttpLimits::max_connections`] connections are served at once. Beyond the cap,
//!   [`PROBE_RESERVE`] more connections are served for the probes only (`/health/live`,
//!   `/health/ready`, `/metrics`; anything else gets 503 `overloaded`), one request each with
//!   a short head deadline; beyond that, new connections are accepted and closed at once, so
//!   they never wait in the listen backlog in front of a probe.
//!
//! Shutdown: the listener is closed at once (new connections are refused), each connection is
//! told to finish (kept-alive idle ones close, requests in flight complete), and [`serve`]
//! returns when every connection is done; dropping its future (the drain deadline) aborts the
//! connections left, as they live in its `JoinSet`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Connections served for the probes only once [`HttpLimits::max_connections`] are open.
pub const PROBE_RESERVE: usize = 16;
/// File descriptors kept out of the default connection cap: Redis connections, log files,
/// the listener, the probe reserve.
const FDS_KEPT: u64 = 256;
/// Highest default connection cap, whatever the file limit.
const MAX_DEFAULT_CONNECTIONS: u64 = 16_384;
/// Head deadline of a connection of the probe reserve: probes send their request at once.
const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait after a failed `accept` (for example EMFILE, out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Deadlines and the connection cap of the API's HTTP server (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a complete request head, from when the connection starts waiting for
    /// one; also how long a kept-alive connection may stay silent between requests. Default
    /// 10 s.
    pub header_read_timeout: Duration,
    /// Longest silence while reading a request body (between two reads, as nginx's
    /// `client_body_timeout`); the request then fails with 400 `body_read_failed`. Default 30 s.
    pub body_read_timeout: Duration,
    /// A connection on which no byte is read or written for this long is closed. Default 60 s;
    /// longer than the event stream's 15 s keep-alive, so an open stream whose client reads
    /// stays open.
    pub idle_timeout: Duration,
    /// Most connections served at once (plus [`PROBE_RESERVE`] for the probes); `None`: the
    /// file-descriptor limit (`RLIMIT_NOFILE`, its soft limit raised to the hard one at
    /// start) less 256, at most 16,384.
    pub max_connections: Option<usize>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit (as nginx and most
/// servers do) and returns the soft limit now in force; `None` when it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => {
                warn!(soft, hard, cause = %e, "cannot raise the open-files limit to its hard limit")
            }
        }
    }
    Some(soft)
}

/// The connection cap when [`HttpLimits::max_connections`] is unset, from a file limit.
fn default_cap(nofile: Option<u64>) -> usize {
    let nofile = nofile.unwrap_or(1024);
    nofile
        .saturating_sub(FDS_KEPT + PROBE_RESERVE as u64)
        .clamp(16, MAX_DEFAULT_CONNECTIONS) as usize
}

/// Serves `app` on `listener` with `limits` until `shutdown` is cancelled, then waits for the
/// connections to finish (the caller caps that wait).
///
/// # Errors
/// None today: accept errors (out of file descriptors, …) are logged and retried.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    probes_only: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let cap = match limits.max_connections {
        Some(n) => n.max(1),
        None => default_cap(raise_nofile_limit()),
    };
    info!(
        max_connections = cap,
        probe_reserve = PROBE_RESERVE,
        header_read_timeout = ?limits.header_read_timeout,
        body_read_timeout = ?limits.body_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "HTTP limits"
    );
    let general = Arc::new(Semaphore::new(cap));
    let reserve = Arc::new(Semaphore::new(PROBE_RESERVE));
    // Dropping the set (the caller's drain deadline passed) aborts the connections left.
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(cause = %e, "accepting a connection failed; retrying shortly");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // A permit of the cap (the whole API), else of the probe reserve (the probes only).
        let (permit, probe) = match general.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    refused += 1;
                    if refused.is_power_of_two() {
                        warn!(
                            refused,
                            max_connections = cap,
                            "connection cap and probe reserve full: closing new connections"
                        );
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = if probe {
            probes_only.clone()
        } else {
            app.clone()
        };
        connections.spawn(serve_connection(
            stream,
            app,
            permit,
            probe,
            limits,
            shutdown.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, the idle deadline passes, or (after `shutdown`) its
/// requests in flight are done. `permit` (its place under the cap) is released when this
/// returns; `probe`: a connection of the probe reserve (one request, a short head deadline).
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    permit: OwnedSemaphorePermit,
    probe: bool,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = TowerToHyperService::new(
        app.map_request(|r: axum::http::Request<Incoming>| r.map(axum::body::Body::new)),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(if probe {
            limits.header_read_timeout.min(PROBE_HEADER_TIMEOUT)
        } else {
            limits.header_read_timeout
        })
        .keep_alive(!probe)
        // Room above the API's own header limits (api::edge answers 431 in the error shape).
        .max_buf_size(128 * 1024)
        .max_headers(crate::api::HYPER_MAX_HEADERS);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_at = activity.deadline(limits.idle_timeout);
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(cause = %e, "connection ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(idle_at.into()) => {
                if activity.idle_for() >= limits.idle_timeout {
                    debug!(idle_timeout = ?limits.idle_timeout, "closing an idle connection");
                    break;
                }
            }
        }
    }
    drop(permit);
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read or write that moved bytes.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn idle_for(&self) -> Duration {
        self.last().elapsed()
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.last() + idle
    }
}

/// A TCP stream that records in [`Activity`] when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_keeps_room_under_the_file_limit() {
        assert_eq!(default_cap(Some(1024)), 1024 - 256 - PROBE_RESERVE);
        assert_eq!(default_cap(Some(100)), 16);
        assert_eq!(default_cap(Some(1 << 20)), 16_384);
        assert!(default_cap(None) + PROBE_RESERVE < 1024);
    }
}
