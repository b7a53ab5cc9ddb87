//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! Two parts (see [`dagrid_shared::metrics`] for every family): the event counters and
//! histograms of this process (and of the workers sharing it under `dagrid start-all`), and the
//! cluster's state read from Redis at each scrape by [`scrape`] (runs by status, ready and
//! claimed steps by priority, the delayed set, waiting and active runs by queue, live workers
//! and their slots, in all and per label set). The cluster part is the same on every replica; when Redis does not answer
//! within [`SCRAPE_TIMEOUT`] it is left out and the rest is still served.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use dagrid_shared::metrics::{self, ClusterGauges, LabelSetGauges, QueueGauges};

use super::state::AppState;
use crate::store::views::Scope;
use crate::store::{Store, StoreResult};

/// Longest wait for Redis at a scrape (below Prometheus' default 10 s scrape timeout).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /metrics`: the text of [`metrics::render`] (content type [`metrics::CONTENT_TYPE`]),
/// the cluster gauges included when Redis answered in time.
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

/// The cluster gauges of one [`Store::cluster_view`] read with [`Scope::METRICS`]: runs by
/// status, ready and claimed steps by priority, the delayed set, per queue its waiting and
/// active runs, and the live workers and their slots, in all and per label set.
///
/// Queues: those configured (`--queue`), paused, or with waiting runs, plus any queue named
/// after a registered DAG that has active runs (a DAG's own queue). A shared queue named only
/// in DAG files and not configured shows while it has waiting runs or is paused.
///
/// # Errors
/// Redis unreachable. A missing stream or consumer group (Redis lost its data) reads as empty.
pub(crate) async fn scrape(store: &Store) -> StoreResult<ClusterGauges> {
    let v = store.cluster_view(Scope::METRICS).await?;
    Ok(ClusterGauges {
        runs_by_status: v
            .runs_by_status
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect(),
        ready_by_priority: v.levels.iter().map(|l| (l.priority, l.ready)).collect(),
        claimed_by_priority: v.levels.iter().map(|l| (l.priority, l.claimed)).collect(),
        delayed: v.delayed,
        queues: v
            .queues
            .into_iter()
            .map(|q| QueueGauges {
                paused: q.paused,
                name: q.name,
                waiting: q.waiting,
                active: q.active,
            })
            .collect(),
        workers_alive: v.workers.len() as u64,
        slots_busy: v.workers.iter().map(|w| u64::from(w.slots_busy)).sum(),
        slots_total: v.workers.iter().map(|w| u64::from(w.slots_total)).sum(),
        selectors: v
            .selectors
            .iter()
            .map(|s| (s.selector.clone(), s.ready, s.matching_workers))
            .collect(),
        label_sets: crate::cluster::label_sets(&v.workers)
            .into_iter()
            .map(|l| LabelSetGauges {
                labels: l.canonical,
                alive: l.alive,
                slots_busy: l.slots_busy,
                slots_total: l.slots_total,
            })
            .collect(),
    })
}
