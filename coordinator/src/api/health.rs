//! Probes for load balancers and Kubernetes: `/health/live` (the process answers) and
//! `/health/ready` (Redis answers PING in time and the coordinator is not draining), and the
//! cluster view `/health` ([`crate::cluster`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::state::AppState;

/// How long `/health/ready` waits for Redis to answer PING.
const PING_TIMEOUT: Duration = crate::cluster::PING_TIMEOUT;

/// `GET /health/live`: answers while the process and its event loop do.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "health",
    summary = "Liveness probe (no token needed)",
    responses(
        (status = 200, description = "The process answers: `{\"status\": \"live\"}`", body = super::schemas::HealthStatus),
    ),
)]
pub(crate) async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: whether Redis answers PING in time and the coordinator is not
/// shutting down.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "health",
    summary = "Readiness probe (no token needed)",
    responses(
        (status = 200, description = "Redis answers PING within 500 ms and the coordinator is not draining: `{\"status\": \"ready\"}`", body = super::schemas::HealthStatus),
        (status = 503, description = "Not ready: `{\"status\": \"unready\", \"failing\": \"draining\" | \"redis\"}`", body = super::schemas::HealthStatus),
    ),
)]
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "failing": "draining" })),
        );
    }
    let ping = tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "failing": "redis" })),
        ),
    }
}

/// `GET /health`: the cluster view, a [`crate::cluster::ClusterSnapshot`] as JSON.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "clusterHealth",
    tag = "health",
    summary = "The cluster view: status with reasons, Redis, workers, queues, scheduler",
    responses(
        (status = 200, description = "The cluster is `ok` or `degraded`", body = crate::cluster::ClusterSnapshot),
        (status = 503, description = "The cluster is `down` (Redis unreachable)", body = crate::cluster::ClusterSnapshot),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn cluster(State(state): State<AppState>) -> impl IntoResponse {
    let snap =
        crate::cluster::snapshot(&state.store, state.started, state.draining.is_cancelled()).await;
    let status = match snap.status {
        crate::cluster::Status::Down => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(snap))
}
