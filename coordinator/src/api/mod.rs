//! The coordinator's HTTP API: one module per resource and one [`router`] that lists every
//! route. JSON in and out; errors as `{"error": {"code", "message", "details"?}}`.

mod auth;
mod dags;
mod drain;
mod edge;
mod error;
pub(crate) mod events;
mod health;
mod metrics;
mod openapi;
mod queues;
mod runs;
mod schemas;
mod state;
mod ui;

pub(crate) use edge::{probes_only, HYPER_MAX_HEADERS};
pub(crate) use runs::MAX_BATCH;
pub(crate) use state::AppState;
use state::MAX_BODY_BYTES;
mod workers;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

/// Every route of the API. Once `state.draining` is cancelled, writes get 503 with
/// `Retry-After` ([`drain`]). With tokens in `auth`, requests need one ([`auth`]); the auth
/// layer covers the routes listed above it and unknown paths, and lets the web UI's static
/// files ([`ui`]) through without a token. Every error, an unknown path (404), method (405)
/// and axum's rejections included, is in the error shape ([`edge`]).
pub(crate) fn router(state: AppState, auth: &crate::Auth) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::cluster))
        .route("/metrics", get(metrics::get))
        .route("/api/v1/dags", get(dags::list).post(dags::register))
        .route("/api/v1/dags/{name}", get(dags::get))
        .route("/api/v1/runs", get(runs::list).post(runs::submit))
        .route("/api/v1/runs/batch", post(runs::submit_batch))
        .route("/api/v1/runs/lookup", post(runs::lookup))
        .route("/api/v1/runs/{id}", get(runs::get))
        .route("/api/v1/runs/{id}/stop", post(runs::stop))
        .route("/api/v1/runs/{id}/retry", post(runs::retry))
        .route("/api/v1/runs/{id}/steps/{step}/log", get(runs::log))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/workers", get(workers::list))
        .route("/api/v1/queues", get(queues::list))
        .route("/api/v1/queues/{name}/pause", post(queues::pause))
        .route("/api/v1/queues/{name}/resume", post(queues::resume))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/session", get(auth::session))
        // The web UI's static files (public: no data in them; not part of the API document).
        .merge(ui::router())
        .fallback(edge::not_found)
        .method_not_allowed_fallback(edge::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.draining.clone(),
            drain::refuse_writes_while_draining,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth::Guard::new(auth),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(edge::error_shape))
        .layer(axum::middleware::from_fn(edge::limit_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
