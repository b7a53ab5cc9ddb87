//! Probes for load balancers and Kubernetes: `/health/live` (the process answers) and
//! `/health/ready` (Redis answers PING in time and the coordinator is not draining), and the
//! cluster view `/health` ([`crate::cluster`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

/// How long `/health/ready` waits for Redis to answer PING.
const PING_TIMEOUT: Duration = crate::cluster::PING_TIMEOUT;

/// `GET /health/live`: 200 while the process and its event loop answer.
pub(crate) async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when Redis answers PING within 500 ms and the coordinator is not
/// shutting down; 503 naming the failing check otherwise.
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "failing": "draining" })),
        );
    }
    let ping = tokio::time::timeout(PING_TIMEOUT, state.store.redis().ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "failing": "redis" })),
        ),
    }
}

/// `GET /health`: the cluster view, a [`crate::cluster::ClusterSnapshot`] as JSON: `status`
/// (`ok`, `degraded`, `down`), `reasons` and `warnings` (`[{"code", "message"}]`), `version`,
/// `uptime_s`, `redis`, `workers`, `levels`, `queues`, `delayed`, `results`, `scheduler`.
/// 200 when the status is `ok` or `degraded`, 503 when `down` (Redis unreachable).
pub(crate) async fn cluster(State(state): State<AppState>) -> impl IntoResponse {
    let snap =
        crate::cluster::snapshot(&state.store, state.started, state.draining.is_cancelled()).await;
    let status = match snap.status {
        crate::cluster::Status::Down => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(snap))
}
