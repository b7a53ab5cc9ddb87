//! `/api/v1/workers`: the live workers, from their heartbeats.

use axum::extract::State;
use axum::response::IntoResponse;
use dagrid_shared::model::Heartbeat;
use serde::Serialize;

use super::error::{ApiError, AppJson, ErrorBody};
use super::state::AppState;

/// Body of `GET /api/v1/workers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkerList {
    /// The last heartbeat of every worker whose heartbeat has not expired.
    workers: Vec<Heartbeat>,
}

/// `GET /api/v1/workers`: every worker whose heartbeat has not expired.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    operation_id = "listWorkers",
    tag = "workers",
    summary = "The live workers, from their heartbeats",
    responses(
        (status = 200, description = "Every worker whose heartbeat has not expired", body = WorkerList),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let workers = state.store.workers().await?;
    Ok(AppJson(WorkerList { workers }))
}
