//! `/api/v1/queues`: the queue view (ready streams per priority level, and per queue the
//! active, waiting and delayed runs) and pausing and resuming a queue.

use axum::extract::{Path, State};
use axum::response::IntoResponse;

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::ErrorCode;
use super::error::{ApiError, AppJson, ErrorBody};
use super::state::AppState;
use crate::store::views::Scope;

/// Body of `GET /api/v1/queues`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueList {
    /// The ready stream of each priority level, 9 down to 0.
    levels: Vec<LevelView>,
    /// Every queue with runs or a limit.
    queues: Vec<QueueView>,
    /// The ready streams of each worker selector (DAG `workerSelector`), all levels together;
    /// `waiting_for` says when no live worker matches one that has ready steps.
    selectors: Vec<crate::cluster::SelectorHealth>,
}

/// One priority level's ready stream, for the queue view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct LevelView {
    /// The level, 0..=9.
    priority: u8,
    /// Entries no worker has claimed yet.
    ready: u64,
    /// Entries claimed by a worker and not finished (the consumer group's pending entries).
    claimed: u64,
    /// Age of the oldest unclaimed entry (ms), from its stream id.
    oldest_ready_ms: Option<u64>,
}

/// One queue, for the queue view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueView {
    /// The queue's name (a DAG's `queue:`, else the DAG's name).
    name: String,
    /// True while paused (`POST /api/v1/queues/{name}/pause`).
    paused: bool,
    /// `maxConcurrency` as this coordinator enforces it (null: none).
    max_concurrency: Option<u32>,
    /// Admitted runs not finished.
    active: u64,
    /// Runs waiting for capacity (or for the queue to resume).
    waiting: u64,
    /// Waiting runs per priority level (levels with none left out).
    waiting_by_priority: BTreeMap<u8, u64>,
    /// Delayed runs of this queue (counted over the first [`crate::store::views::VIEW_DELAYED_MAX`] delayed runs).
    delayed: u64,
    /// How long the longest-waiting run has waited since it was submitted (ms).
    oldest_wait_ms: Option<u64>,
}

/// Body of a pause or resume response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct QueuePaused {
    /// The queue.
    name: String,
    /// True after a pause, false after a resume.
    paused: bool,
}

/// `GET /api/v1/queues`: the priority levels (9 down to 0) and the named queues, rendered from
/// the one cluster read ([`crate::store::views`]).
#[utoipa::path(
    get,
    path = "/api/v1/queues",
    operation_id = "listQueues",
    tag = "queues",
    summary = "The ready streams per priority level and the runs of each queue",
    responses(
        (status = 200, description = "Levels (9 down to 0) and queues", body = QueueList),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let v = state.store.cluster_view(Scope::QUEUES).await?;
    let age = |at: Option<u64>| at.map(|ms| v.now_ms.saturating_sub(ms));
    let levels = v
        .levels
        .iter()
        .map(|l| LevelView {
            priority: l.priority,
            ready: l.ready,
            claimed: l.claimed,
            oldest_ready_ms: age(l.oldest_ready_at_ms),
        })
        .collect();
    let queues = v
        .queues
        .iter()
        .map(|q| QueueView {
            name: q.name.clone(),
            paused: q.paused,
            max_concurrency: (q.limit > 0).then_some(q.limit),
            active: q.active,
            waiting: q.waiting,
            waiting_by_priority: q.waiting_by_priority.clone(),
            delayed: q.delayed,
            oldest_wait_ms: age(q.oldest_created_ms),
        })
        .collect();
    let selectors = v
        .selectors
        .iter()
        .map(|s| crate::cluster::selector_health(s, v.now_ms))
        .collect();
    Ok(AppJson(QueueList {
        levels,
        queues,
        selectors,
    }))
}

/// `POST /api/v1/queues/{name}/pause`: the queue admits no new run until resumed (runs already
/// admitted go on).
#[utoipa::path(
    post,
    path = "/api/v1/queues/{name}/pause",
    operation_id = "pauseQueue",
    tag = "queues",
    summary = "Pause a queue: it admits no new run until resumed",
    params(("name" = String, Path, description = "Queue name", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "Paused", body = QueuePaused),
        (status = 422, description = "Not a queue name (`invalid_queue`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set(state, name, true).await
}

/// `POST /api/v1/queues/{name}/resume`: admits the queue's waiting runs again.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{name}/resume",
    operation_id = "resumeQueue",
    tag = "queues",
    summary = "Resume a paused queue",
    params(("name" = String, Path, description = "Queue name", pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "Resumed", body = QueuePaused),
        (status = 422, description = "Not a queue name (`invalid_queue`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set(state, name, false).await
}

async fn set(
    state: AppState,
    name: String,
    paused: bool,
) -> Result<AppJson<QueuePaused>, ApiError> {
    if let Some(problem) = dagrid_shared::dag::name_problem(&name) {
        return Err(ApiError::new(
            ErrorCode::InvalidQueue,
            format!(
                "\"{name}\" is not a queue name: it {problem}; {}",
                dagrid_shared::dag::NAME_RULE
            ),
        ));
    }
    state.store.set_paused(&name, paused).await?;
    Ok(AppJson(QueuePaused { name, paused }))
}
