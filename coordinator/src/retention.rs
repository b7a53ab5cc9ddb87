//! The retention loop: sweeps finished runs away every [`Policy::interval`] (the sweep and the
//! rules are in [`crate::store::retention`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::Store;

pub(crate) use crate::store::retention::Policy;

/// Sweeps every [`Policy::interval`] until `shutdown` is cancelled (checked between batches
/// too). Errors are logged and the next sweep tries again. Returns at once when both bounds
/// are disabled.
pub(crate) async fn run(store: Arc<Store>, policy: Policy, shutdown: CancellationToken) {
    if policy.age.is_none() && policy.keep.is_none() {
        info!("retention disabled: finished runs are kept forever");
        return;
    }
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.interval) => {}
        }
        match store.sweep_retention(&policy, &shutdown).await {
            Ok(0) => {}
            Ok(n) => info!(runs = n, "retention: deleted finished runs"),
            Err(e) => warn!(cause = %e, "retention sweep failed; the next sweep tries again"),
        }
    }
}
