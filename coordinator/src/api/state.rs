//! What every handler shares ([`AppState`]) and the request body limit, below the handler
//! modules so that they never import the router's module.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Largest request body: a batch of 10,000 runs with a few params each fits.
pub(super) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    /// Cancelled when the coordinator starts shutting down (readiness turns 503, writes get
    /// 503 with `Retry-After`).
    pub(crate) draining: CancellationToken,
    /// When this coordinator started serving (for the uptime in `/health`).
    pub(crate) started: std::time::Instant,
    /// The event feed of this process (`GET /api/v1/events`).
    pub(crate) events: Arc<crate::events::Feed>,
    /// Time between keep-alive comments on an idle event stream:
    /// [`super::events::KEEP_ALIVE`], or a third of the HTTP idle timeout when that is shorter,
    /// so the idle timeout never closes a quiet stream ([`super::events::keep_alive_for`]).
    pub(crate) keep_alive: std::time::Duration,
}
