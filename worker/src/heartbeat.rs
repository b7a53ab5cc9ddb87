//! The worker's heartbeat: proof of life for the coordinators, the refresh of its leases, and
//! its deregistration at shutdown.
//!
//! Every interval the worker writes a [`Heartbeat`] (msgpack) to its key with a TTL of three
//! intervals, sets its score in the workers sorted set to now, and refreshes the ready entries
//! it holds (one `XCLAIM … JUSTID` per priority level with entries; see [`crate::lease`]), all
//! in one MULTI, so a worker that dies leaves the worker list within three intervals and the
//! coordinators re-queue its steps once its entries idle past 1.5 intervals (when it has no
//! connection left, as after a kill) or their lease timeout, while a live
//! worker's entries never look idle, and a step whose entry
//! it lost is stopped within one interval. A failed write is logged and tried again at the
//! next interval; it never stops a step.
//!
//! On shutdown it deletes its key and its member of the set, and removes its consumer from the
//! ready streams' group when it holds no pending entries (so consumers do not pile up, one per
//! process start).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::labels::Labels;
use dagrid_shared::model::{self, now_ms, Heartbeat};
use dagrid_shared::redis::keys::WORKER_GROUP;
use dagrid_shared::{ConnError, Redis};
use redis::Value;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::health::Signals;
use crate::lease::Leases;

/// What the heartbeat says about this worker.
#[derive(Debug, Clone)]
pub(crate) struct Beat {
    pub(crate) redis: Redis,
    pub(crate) worker_id: String,
    pub(crate) host: String,
    pub(crate) interval: Duration,
    pub(crate) slots_total: usize,
    /// Slots running a step now.
    pub(crate) busy: Arc<AtomicUsize>,
    pub(crate) started_ms: u64,
    /// The ready entries this worker holds, refreshed with each heartbeat.
    pub(crate) leases: Arc<Leases>,
    /// The worker's health signals: each heartbeat carries the claim loop's progress and
    /// stamps a successful write.
    pub(crate) signals: Arc<Signals>,
    /// The worker's labels (`--label`).
    pub(crate) labels: Labels,
}

/// Sends a heartbeat (and refreshes the leases) at once and then every interval until `stop`
/// is cancelled, then deregisters the worker. A failed write is logged and the next interval
/// tries again.
pub(crate) async fn run(beat: Beat, stop: CancellationToken) {
    let mut probe = Probe::new();
    let mut ticker = tokio::time::interval(beat.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (cpu_percent, memory_bytes) = probe.sample();
        let sent_ms = now_ms();
        let hb = Heartbeat {
            worker_id: beat.worker_id.clone(),
            host: beat.host.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            slots_total: beat.slots_total as u32,
            slots_busy: beat.busy.load(Ordering::Relaxed) as u32,
            cpu_percent,
            memory_bytes,
            started_ms: beat.started_ms,
            sent_ms,
            interval_ms: beat.interval.as_millis() as u64,
            claim_progress_ms: beat.signals.claim_progress_ms(),
            stalled: beat.signals.stalled(sent_ms),
            draining: beat.signals.draining(),
            named: dagrid_shared::redis::conn::connections_named(),
            labels: beat.labels.clone(),
        };
        let mut sent = send(&beat, &hb).await;
        if sent.as_ref().is_err_and(ConnError::is_dropped) {
            // The connection broke (Redis or the network closed it): try once more at once on
            // a new one, so a reconnect never leaves the heartbeat an interval behind (the
            // reaper takes a worker with no connection and an old heartbeat for dead).
            sent = send(&beat, &hb).await;
        }
        match sent {
            Ok(true) => beat.signals.heartbeat_written(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(worker.id = %beat.worker_id, cause = %e, "could not send the heartbeat; retrying next interval")
            }
        }
    }
    if let Err(e) = deregister(&beat).await {
        tracing::warn!(
            worker.id = %beat.worker_id,
            cause = %e,
            "could not deregister the worker; its heartbeat key expires on its own"
        );
    }
}

/// The heartbeat key's TTL: three intervals, at least 1 ms.
pub(crate) fn ttl(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_millis(1))
}

/// `SET <worker key> <msgpack> PX <ttl>`, `ZADD <workers> <now> <id>` and, for each ready
/// stream where the worker holds entries, `XCLAIM <ready stream> workers <id> 0 <entry id>… JUSTID`,
/// in one MULTI; then settles the leases with each XCLAIM that answered.
///
/// True when the heartbeat key and the workers-set member were both written.
///
/// # Errors
/// When the call as a whole fails (nothing is settled then). A command that fails alone is
/// logged and leaves the rest applied.
async fn send(beat: &Beat, hb: &Heartbeat) -> Result<bool, ConnError> {
    let keys = beat.redis.keys();
    let bytes = model::encode(hb).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "cannot encode heartbeat",
            e.to_string(),
        ))
    })?;
    let held = beat.leases.held();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .ignore_errors()
        .cmd("SET")
        .arg(keys.worker(&beat.worker_id))
        .arg(bytes)
        .arg("PX")
        .arg(ttl(beat.interval).as_millis() as u64)
        .cmd("ZADD")
        .arg(keys.workers())
        .arg(hb.sent_ms)
        .arg(&beat.worker_id);
    for (stream, ids) in &held {
        pipe.cmd("XCLAIM")
            .arg(&**stream)
            .arg(WORKER_GROUP)
            .arg(&beat.worker_id)
            .arg(0)
            .arg(ids)
            .arg("JUSTID");
    }
    let sent = tokio::time::Instant::now();
    let mut c = beat.redis.conn().await?;
    let replies: Vec<Value> = pipe.query_async(&mut *c).await?;
    drop(c);
    let mut replies = replies.into_iter();
    let mut written = true;
    for what in ["heartbeat key", "workers set"] {
        match replies.next() {
            Some(Value::ServerError(e)) => {
                written = false;
                tracing::warn!(worker.id = %beat.worker_id, write = what, cause = %e, "could not write the heartbeat; retrying next interval");
            }
            Some(_) => {}
            None => written = false,
        }
    }
    let mut renewed = true;
    for (stream, ids) in &held {
        match replies.next().map(claimed_ids) {
            Some(Ok(kept)) => {
                let lost = beat.leases.settle(stream, ids, &kept);
                if !lost.is_empty() {
                    tracing::info!(
                        worker.id = %beat.worker_id,
                        stream = &**stream,
                        entries = ?lost,
                        "ready entries no longer held by this worker (reclaimed, or their run stopped); stopping their steps"
                    );
                }
            }
            Some(Err(e)) => {
                renewed = false;
                tracing::warn!(
                    worker.id = %beat.worker_id,
                    stream = &**stream,
                    cause = %e,
                    "could not refresh the claims of running steps; retrying next interval"
                );
            }
            None => {
                renewed = false;
                tracing::warn!(
                    worker.id = %beat.worker_id,
                    stream = &**stream,
                    "no reply to the refresh of the claims of running steps; retrying next interval"
                );
            }
        }
    }
    if renewed {
        // Counted from before the call: Redis reset the entries' idle time no earlier.
        beat.leases.renewed(sent);
    }
    Ok(written)
}

/// The ids an `XCLAIM … JUSTID` returned, or why its reply is not a list of ids.
fn claimed_ids(reply: Value) -> Result<Vec<String>, String> {
    match reply {
        Value::ServerError(e) => Err(e.to_string()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| redis::from_redis_value::<String>(v).map_err(|e| e.to_string()))
            .collect(),
        other => Err(format!("unexpected XCLAIM reply {other:?}")),
    }
}

/// Deletes the heartbeat key and the workers-set member (one MULTI), then removes this worker's
/// consumer from the ready stream's group if it holds no pending entries (XPENDING, then
/// XGROUP DELCONSUMER; nothing is delivered to it any more, so nothing arrives in between).
async fn deregister(beat: &Beat) -> Result<(), ConnError> {
    let keys = beat.redis.keys();
    let mut c = beat.redis.conn().await?;
    redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(keys.worker(&beat.worker_id))
        .ignore()
        .cmd("ZREM")
        .arg(keys.workers())
        .arg(&beat.worker_id)
        .ignore()
        .query_async::<()>(&mut *c)
        .await?;
    let streams = crate::claim::ready_streams(&beat.redis, &beat.labels).await?;
    let mut held = false;
    for (_, ready) in &streams {
        let pending: Vec<Value> = redis::cmd("XPENDING")
            .arg(ready)
            .arg(WORKER_GROUP)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(&beat.worker_id)
            .query_async(&mut *c)
            .await?;
        held |= !pending.is_empty();
    }
    if !held {
        for (_, ready) in &streams {
            redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(ready)
                .arg(WORKER_GROUP)
                .arg(&beat.worker_id)
                .query_async::<()>(&mut *c)
                .await?;
        }
    } else {
        tracing::warn!(
            worker.id = %beat.worker_id,
            "the worker still holds ready entries it did not report; the coordinator will re-queue them"
        );
    }
    Ok(())
}

/// This process's CPU use and resident memory, from sysinfo (refreshing only this process).
struct Probe {
    system: Option<System>,
    pid: Pid,
}

impl Probe {
    fn new() -> Self {
        Self {
            system: System::new().ok(),
            pid: Pid::from_u32(std::process::id()),
        }
    }

    /// CPU percent of one core since the previous sample (0 at the first), and RSS bytes.
    fn sample(&mut self) -> (f32, u64) {
        let Some(system) = self.system.as_mut() else {
            return (0.0, 0);
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        system
            .process(self.pid)
            .map(|p| (p.cpu_usage(), p.memory()))
            .unwrap_or((0.0, 0))
    }
}

/// The host name, or `unknown-host`.
pub(crate) fn host_name() -> String {
    System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_list_of_ids_is_an_xclaim_answer() {
        let ids = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::SimpleString("2-0".into()),
        ]);
        assert_eq!(claimed_ids(ids), Ok(vec!["1-0".into(), "2-0".into()]));
        assert_eq!(claimed_ids(Value::Array(Vec::new())), Ok(Vec::new()));
        assert!(claimed_ids(Value::Nil).is_err());
        assert!(claimed_ids(Value::Array(vec![Value::Nil])).is_err());
    }

    #[test]
    fn the_heartbeat_key_lives_three_intervals() {
        assert_eq!(ttl(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(ttl(Duration::ZERO), Duration::from_millis(1));
    }
}
