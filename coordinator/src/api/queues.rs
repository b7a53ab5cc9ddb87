//! `/api/v1/queues`: the queue view (ready streams per priority level, and per queue the
//! active, waiting and delayed runs) and pausing and resuming a queue.

use axum::extract::{Path, State};
use axum::response::IntoResponse;

use super::error::{ApiError, AppJson};
use super::AppState;

/// `GET /api/v1/queues`: `{"levels": [{"priority", "ready", "claimed", "oldest_ready_ms"}…]
/// (priority 9 down to 0), "queues": [{"name", "paused", "max_concurrency", "active",
/// "waiting", "waiting_by_priority", "delayed", "oldest_wait_ms"}…]}`. Ages are in ms.
pub(crate) async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let levels = state.store.level_views().await?;
    let queues = state.store.queue_views().await?;
    Ok(AppJson(
        serde_json::json!({ "levels": levels, "queues": queues }),
    ))
}

/// `POST /api/v1/queues/{name}/pause`: the queue admits no new run until resumed (runs already
/// admitted go on). 200 `{"name", "paused": true}`; 422 for a name that cannot be a queue.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set(state, name, true).await
}

/// `POST /api/v1/queues/{name}/resume`: admits the queue's waiting runs again. 200
/// `{"name", "paused": false}`.
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
) -> Result<AppJson<serde_json::Value>, ApiError> {
    if let Some(problem) = dagrid_shared::dag::name_problem(&name) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_queue",
            format!(
                "\"{name}\" is not a queue name: it {problem}; {}",
                dagrid_shared::dag::NAME_RULE
            ),
        ));
    }
    state.store.set_paused(&name, paused).await?;
    Ok(AppJson(
        serde_json::json!({ "name": name, "paused": paused }),
    ))
}
