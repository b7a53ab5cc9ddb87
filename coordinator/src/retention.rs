//! The retention loop: sweeps finished runs away every [`Policy::interval`], and walks on over
//! the dedup holders, releasing those of finished runs (the sweeps and their rules are in
//! [`crate::store::retention`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::Store;

pub(crate) use crate::store::retention::Policy;

/// Sweeps every [`Policy::interval`] until `shutdown` is cancelled (checked between batches
/// too): finished runs, unless both bounds are disabled, then the next part of the dedup
/// holders. Errors are logged and the next sweep tries again.
pub(crate) async fn run(store: Arc<Store>, policy: Policy, shutdown: CancellationToken) {
    let retain = policy.age.is_some() || policy.keep.is_some();
    if !retain {
        info!("retention disabled: finished runs are kept forever");
    }
    let mut cursor = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.interval) => {}
        }
        if retain {
            match store.sweep_retention(&policy, &shutdown).await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "retention: deleted finished runs"),
                Err(e) => warn!(cause = %e, "retention sweep failed; the next sweep tries again"),
            }
        }
        match store.sweep_dedup_holders(cursor, &shutdown).await {
            Ok((next, released)) => {
                cursor = next;
                if released > 0 {
                    info!(keys = released, "released dedup keys of finished runs");
                }
            }
            Err(e) => warn!(cause = %e, "dedup holders sweep failed; the next sweep tries again"),
        }
    }
}
