//! The worker's health: the signals its loops leave behind ([`Signals`]: when the claim loop
//! last tried to read, when the last heartbeat was written, whether it is draining), the rule
//! that calls a claim loop stalled ([`stalled`]), and the optional HTTP listener
//! ([`crate::Config::health_addr`]) that serves them to load balancers and Kubernetes:
//!
//! * `GET /health/live`: 200 `{"status": "live"}` while the process and its event loop answer.
//! * `GET /health/ready`: 200 `{"status": "ready"}` when the last heartbeat write succeeded
//!   within the heartbeat key's TTL (three intervals: Redis is reachable), the claim loop is
//!   not stalled and the worker is not draining; otherwise 503 `{"status": "unready",
//!   "failing": ["redis" | "claim_loop" | "draining" | "starting", …], "message": "…"}`.
//!   Both read atomics only: no Redis round trip, no lock.
//! * `GET /metrics`: the process-wide registry, [`dagrid_shared::metrics::render`], with
//!   content type [`dagrid_shared::metrics::CONTENT_TYPE`].
//!
//! A worker that is alive but no longer consumes (celery/celery#8030: a read hung on a dead
//! connection) keeps answering `/health/live` and heartbeating, so the check that matters is
//! progress: see [`STALL_AFTER`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use dagrid_shared::model::now_ms;
use dagrid_shared::redis::conn::BLOCK_TIMEOUT;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A claim loop with a free slot that neither started nor finished a read of the ready
/// streams for this long is stalled: 10 s, five times [`BLOCK_TIMEOUT`] (2 s), the longest a
/// healthy blocking read lasts, so a slow round trip or a back-off step (at most 5 s while
/// Redis is unreachable) never counts as a stall, while a read hung on a dead connection does
/// (it lasts up to the connection's 12 s response timeout).
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(5 * BLOCK_TIMEOUT.as_secs());

/// What the worker's loops record for its health; shared by the claim loop (which stamps
/// each read attempt), the heartbeat (which carries it and stamps each successful write) and
/// the HTTP listener. Reading and writing are single atomic operations.
#[derive(Debug)]
pub(crate) struct Signals {
    /// When the claim loop last started or finished a read (ms since the epoch); 0: none yet.
    claim_progress_ms: AtomicU64,
    /// When a heartbeat write last succeeded (ms since the epoch); 0: none yet.
    heartbeat_ok_ms: AtomicU64,
    /// Slots running a step now (the claim loop's counter).
    busy: Arc<AtomicUsize>,
    slots_total: usize,
    /// How long a heartbeat write proves Redis reachable: the heartbeat key's TTL.
    heartbeat_ttl: Duration,
    /// When the worker started (ms since the epoch): the base of the stall rule before the
    /// first read.
    started_ms: u64,
    /// Cancelled when the worker starts shutting down.
    draining: CancellationToken,
}

impl Signals {
    pub(crate) fn new(
        busy: Arc<AtomicUsize>,
        slots_total: usize,
        heartbeat_ttl: Duration,
        started_ms: u64,
        draining: CancellationToken,
    ) -> Self {
        Self {
            claim_progress_ms: AtomicU64::new(0),
            heartbeat_ok_ms: AtomicU64::new(0),
            busy,
            slots_total,
            heartbeat_ttl,
            started_ms,
            draining,
        }
    }

    /// The claim loop starts or finished a read attempt (connecting included).
    pub(crate) fn claim_attempt(&self) {
        self.claim_progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A heartbeat write succeeded.
    pub(crate) fn heartbeat_written(&self) {
        self.heartbeat_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the claim loop last started or finished a read (ms); 0: none yet.
    pub(crate) fn claim_progress_ms(&self) -> u64 {
        self.claim_progress_ms.load(Ordering::Relaxed)
    }

    /// Whether the worker is shutting down.
    pub(crate) fn draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Whether the claim loop is stalled now ([`stalled`]).
    pub(crate) fn stalled(&self, now_ms: u64) -> bool {
        !self.draining()
            && stalled(
                now_ms,
                self.claim_progress_ms().max(self.started_ms),
                self.busy.load(Ordering::Relaxed),
                self.slots_total,
            )
    }

    /// The failing readiness checks now, empty when ready: `draining`, `starting` (no
    /// heartbeat written yet), `redis` (the last successful heartbeat write is older than the
    /// heartbeat TTL), `claim_loop` (stalled).
    pub(crate) fn failing(&self, now_ms: u64) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if self.draining() {
            failing.push("draining");
        }
        let ok = self.heartbeat_ok_ms.load(Ordering::Relaxed);
        if ok == 0 {
            failing.push("starting");
        } else if now_ms.saturating_sub(ok) > self.heartbeat_ttl.as_millis() as u64 {
            failing.push("redis");
        }
        if self.stalled(now_ms) {
            failing.push("claim_loop");
        }
        failing
    }
}

/// The stall rule: a claim loop is stalled when it has a free slot (`busy < slots_total`) and
/// its last read attempt started or finished (`progress_ms`, ms since the epoch) more than
/// [`STALL_AFTER`] before `now_ms`. A loop whose slots are all busy waits for one to free up,
/// which is no stall however long the steps run.
pub(crate) fn stalled(now_ms: u64, progress_ms: u64, busy: usize, slots_total: usize) -> bool {
    busy < slots_total && now_ms.saturating_sub(progress_ms) > STALL_AFTER.as_millis() as u64
}

/// Binds the health listener (before anything else starts, so a bad address fails at once).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::HealthListener { addr, source })
}

/// Serves `/health/live`, `/health/ready` and `/metrics` on `listener` until `stop` is
/// cancelled (requests in flight then finish).
pub(crate) async fn serve(listener: TcpListener, signals: Arc<Signals>, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "worker health listener started");
    let app = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(signals);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(cause = %e, "the worker health listener failed");
    }
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

async fn ready(State(signals): State<Arc<Signals>>) -> impl IntoResponse {
    let failing = signals.failing(now_ms());
    if failing.is_empty() {
        return (StatusCode::OK, Json(json!({ "status": "ready" })));
    }
    let message = failing
        .iter()
        .map(|f| match *f {
            "draining" => "the worker is shutting down".to_string(),
            "starting" => "no heartbeat written yet (Redis not reached since start)".to_string(),
            "redis" => format!(
                "no heartbeat written for longer than the heartbeat TTL ({} ms): Redis unreachable",
                signals.heartbeat_ttl.as_millis()
            ),
            _ => format!(
                "the claim loop has free slots but made no read attempt for {} s",
                STALL_AFTER.as_secs()
            ),
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unready", "failing": failing, "message": message })),
    )
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, dagrid_shared::metrics::CONTENT_TYPE)],
        dagrid_shared::metrics::render(None),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrid_shared::model::{self, Heartbeat};

    #[test]
    fn a_loop_with_free_slots_and_no_read_for_ten_seconds_is_stalled() {
        let t = 1_000_000;
        let limit = STALL_AFTER.as_millis() as u64;
        assert!(
            !stalled(t, t - limit, 0, 2),
            "exactly the limit is not yet a stall"
        );
        assert!(stalled(t, t - limit - 1, 0, 2));
        assert!(stalled(t, t - limit - 1, 1, 2));
        // Every slot busy: the loop waits for a slot, which is no stall.
        assert!(!stalled(t, 0, 2, 2));
        assert!(
            !stalled(t, t + 5, 0, 2),
            "a stamp in the future is no stall"
        );
        assert_eq!(STALL_AFTER, Duration::from_secs(10));
    }

    #[test]
    fn readiness_names_every_failing_check() {
        let busy = Arc::new(AtomicUsize::new(0));
        let draining = CancellationToken::new();
        let start = 1_000_000;
        let s = Signals::new(
            busy.clone(),
            2,
            Duration::from_secs(3),
            start,
            draining.clone(),
        );
        assert_eq!(s.failing(start), vec!["starting"]);
        s.heartbeat_ok_ms.store(start, Ordering::Relaxed);
        s.claim_progress_ms.store(start, Ordering::Relaxed);
        assert!(s.failing(start + 1000).is_empty());
        assert_eq!(s.failing(start + 3001), vec!["redis"]);
        s.heartbeat_ok_ms.store(start + 11_000, Ordering::Relaxed);
        assert_eq!(s.failing(start + 11_000), vec!["claim_loop"]);
        busy.store(2, Ordering::Relaxed);
        assert!(s.failing(start + 11_000).is_empty());
        draining.cancel();
        assert_eq!(s.failing(start + 11_000), vec!["draining"]);
    }

    /// The heartbeat as workers wrote it before the health fields existed.
    #[derive(serde::Serialize)]
    struct OldHeartbeat {
        worker_id: String,
        host: String,
        pid: u32,
        version: String,
        slots_total: u32,
        slots_busy: u32,
        cpu_percent: f32,
        memory_bytes: u64,
        started_ms: u64,
        sent_ms: u64,
    }

    #[test]
    fn heartbeats_of_older_workers_still_decode() {
        let old = OldHeartbeat {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            version: "0.1.0".into(),
            slots_total: 2,
            slots_busy: 1,
            cpu_percent: 1.5,
            memory_bytes: 10,
            started_ms: 5,
            sent_ms: 6,
        };
        let hb: Heartbeat = model::decode(&model::encode(&old).unwrap()).unwrap();
        assert_eq!(hb.worker_id, "w");
        assert_eq!(hb.sent_ms, 6);
        assert_eq!(
            (
                hb.interval_ms,
                hb.claim_progress_ms,
                hb.stalled,
                hb.draining
            ),
            (0, 0, false, false)
        );
    }
}
