//! `/api/v1/workers`: the live workers, from their heartbeats.

use axum::extract::State;
use axum::response::IntoResponse;

use super::error::{ApiError, AppJson};
use super::AppState;

/// `GET /api/v1/workers`: `{"workers": [Heartbeat…]}` for every worker whose heartbeat has not
/// expired.
pub(crate) async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let workers = state.store.workers().await?;
    Ok(AppJson(serde_json::json!({ "workers": workers })))
}
