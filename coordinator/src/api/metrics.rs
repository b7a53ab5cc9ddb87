//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! Two parts (see [`dagrid_shared::metrics`] for every family): the event counters and
//! histograms of this process (and of the workers sharing it under `dagrid start-all`), and the
//! cluster's state read from Redis at each scrape by [`scrape`] (runs by status, ready and
//! claimed steps by priority, the delayed set, waiting and active runs by queue, live workers
//! and their slots). The cluster part is the same on every replica; when Redis does not answer
//! within [`SCRAPE_TIMEOUT`] it is left out and the rest is still served.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use dagrid_shared::keys::WORKER_GROUP;
use dagrid_shared::metrics::{self, ClusterGauges, QueueGauges};
use dagrid_shared::model::{self, Heartbeat, Priority, RunStatus};
use dagrid_shared::{conn, ConnError};
use redis::{RedisResult, Value};

use super::AppState;
use crate::store::Store;

/// Longest wait for Redis at a scrape (below Prometheus' default 10 s scrape timeout).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /metrics`: 200 with the text of [`metrics::render`] (content type
/// [`metrics::CONTENT_TYPE`]), the cluster gauges included when Redis answered in time.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses((
        status = 200,
        description = "This process's counters and histograms, and the cluster gauges read from Redis (left out when Redis does not answer within 5 s)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    )),
)]
pub(crate) async fn get(State(state): State<AppState>) -> impl IntoResponse {
    let extra = match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(&state.store)).await {
        Ok(Ok(gauges)) => Some(gauges.registry()),
        Ok(Err(e)) => {
            tracing::warn!(cause = %e, "metrics: cannot read the cluster state from Redis; serving this process's metrics only");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?SCRAPE_TIMEOUT, "metrics: Redis did not answer in time; serving this process's metrics only");
            None
        }
    };
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(extra.as_ref()),
    )
}

/// Reads the cluster's state from Redis in two pipelined round trips: first every fixed key
/// (ZCARD of the runs-by-status indexes, XLEN and XPENDING of each ready stream, ZCARD of the
/// delayed set) and the lists of names (queues with waiting runs, paused queues, DAG names,
/// worker ids); then per queue SCARD of its active set and ZCARD of its waiting set, and MGET of
/// the workers' heartbeats.
///
/// Queues: those configured (`--queue`), paused, or with waiting runs, plus any queue named
/// after a registered DAG that has active runs (a DAG's own queue). A shared queue named only
/// in DAG files and not configured shows while it has waiting runs or is paused.
///
/// # Errors
/// Redis errors. A missing stream or consumer group (Redis lost its data) reads as empty.
pub(crate) async fn scrape(store: &Store) -> Result<ClusterGauges, ConnError> {
    let keys = store.redis().keys();
    let levels: Vec<Priority> = Priority::levels_high_to_low().collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in RunStatus::ALL {
        pipe.cmd("ZCARD").arg(keys.runs_by_status(s.as_str()));
    }
    for p in &levels {
        pipe.cmd("XLEN").arg(keys.ready(p.get()));
        pipe.cmd("XPENDING")
            .arg(keys.ready(p.get()))
            .arg(WORKER_GROUP);
    }
    pipe.cmd("ZCARD").arg(keys.delayed());
    pipe.cmd("SMEMBERS").arg(keys.waiting_queues());
    pipe.cmd("SMEMBERS").arg(keys.paused());
    pipe.cmd("HKEYS").arg(keys.dags());
    pipe.cmd("ZRANGE").arg(keys.workers()).arg(0).arg(-1);
    let mut c = store.redis().conn().await?;
    let replies: Vec<RedisResult<Value>> = pipe.query_async(&mut *c).await?;
    let mut replies = replies.into_iter();
    let mut next = || replies.next().unwrap_or(Ok(Value::Nil));

    let mut g = ClusterGauges::default();
    for s in RunStatus::ALL {
        g.runs_by_status.push((s.as_str(), int(next()?)));
    }
    for p in &levels {
        let len = int(next()?);
        // XPENDING summary: [count, smallest id, largest id, consumers]; NOGROUP when Redis
        // lost the group: nothing is claimed then.
        let claimed = match next() {
            Ok(Value::Array(v)) => v.into_iter().next().map_or(0, int),
            _ => 0,
        };
        // Acknowledged entries are deleted, so the stream holds exactly the claimed entries and
        // the unclaimed ones.
        g.ready_by_priority
            .push((p.get(), len.saturating_sub(claimed)));
        g.claimed_by_priority.push((p.get(), claimed));
    }
    g.delayed = int(next()?);
    let waiting: Vec<String> = parse(next()?)?;
    let paused: BTreeSet<String> = parse(next()?)?;
    let dags: Vec<String> = parse(next()?)?;
    let workers: Vec<String> = parse(next()?)?;

    // Queues always shown, and DAG-named ones shown only when they hold runs.
    let mut shown: BTreeSet<String> = store.queues.keys().cloned().collect();
    shown.extend(waiting);
    shown.extend(paused.iter().cloned());
    let mut names = shown.clone();
    names.extend(dags);
    let names: Vec<String> = names.into_iter().collect();

    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("SCARD").arg(keys.active(name));
        pipe.cmd("ZCARD").arg(keys.waiting(name));
    }
    if !workers.is_empty() {
        let mut get = redis::cmd("MGET");
        for id in &workers {
            get.arg(keys.worker(id));
        }
        pipe.add_command(get);
    }
    let replies: Vec<Value> = conn::query_pipeline(&mut c, &pipe).await?;
    drop(c);
    let mut replies = replies.into_iter();
    for name in names {
        let active = replies.next().map_or(0, int);
        let waiting = replies.next().map_or(0, int);
        if shown.contains(&name) || active > 0 || waiting > 0 {
            g.queues.push(QueueGauges {
                paused: paused.contains(&name),
                name,
                waiting,
                active,
            });
        }
    }
    if let Some(beats) = replies.next() {
        let beats: Vec<Option<Vec<u8>>> = parse(beats)?;
        // A heartbeat key missing: the worker's heartbeat expired (it is not alive).
        for beat in beats.into_iter().flatten() {
            if let Ok(hb) = model::decode::<Heartbeat>(&beat) {
                g.workers_alive += 1;
                g.slots_busy += u64::from(hb.slots_busy);
                g.slots_total += u64::from(hb.slots_total);
            }
        }
    }
    Ok(g)
}

/// A reply as `T`.
fn parse<T: redis::FromRedisValue>(v: Value) -> Result<T, ConnError> {
    Ok(redis::from_redis_value(v).map_err(redis::RedisError::from)?)
}

/// An integer reply as a count (anything else: 0).
fn int(v: Value) -> u64 {
    match v {
        Value::Int(n) => u64::try_from(n).unwrap_or(0),
        _ => 0,
    }
}
