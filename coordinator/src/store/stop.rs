//! Ending a run before its steps are done: `dagrid stop` and `POST /api/v1/runs/{id}/stop`
//! (final status `aborted`), and a run past its DAG's `timeoutSec` (final status `failed`).
//!
//! A stop is one `apply_transition` compare-and-set (see [`crate::plan::stop`]): in one script
//! every step not final becomes `aborted`, the ready entries of queued and running steps are
//! acknowledged and deleted (a queued step is never claimed; the worker running a step finds
//! its claim gone at its next lease refresh and stops the process group with the step's
//! `signalOnStop`, SIGKILL after `maxCleanUpTimeSec`), waiting retries and the run's deadline
//! leave the delayed set, and the run leaves its queue. A run that lost the race to another
//! writer is read again and stopped again ([`Store::apply_cas`]).
//!
//! A started run with handlers (Dagu `handlerOn`) does not end at once: the same script queues
//! its `abort` handler (else `exit`), or `exit` when a stop hits another handler, and the run
//! stays `running` until they are final; a stop while `exit` is queued or running ends the run.
//! See [`crate::plan::stop`].
//!
//! A stopped run's unfinished child runs (of its call steps) are stopped after it, each the
//! same way, so a whole tree of runs goes.

use std::future::Future;
use std::pin::Pin;

use dagrid_shared::dag::Dag;
use dagrid_shared::model::{now_ms, RunStatus};
use tracing::warn;

use super::{Store, StoreResult};
use crate::plan;

/// What a stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// The run was ended with the requested status, or (a started run with handlers) its
    /// steps were aborted and its `abort` or `exit` handler queued; it ends once they are final.
    Stopped,
    /// The run had finished already, with this status; nothing changed.
    Finished(RunStatus),
}

/// Ends run `run_id` with `status` (aborted or failed), every unfinished step getting
/// `why(dag)` as its error, through [`Store::apply_cas`] (which counts the metrics and admits
/// the runs waiting for the slot it frees).
///
/// # Errors
/// Those of [`Store::apply_cas`]: `NotFound` when no run has this id, `Conflict` when the run
/// kept changing, `Unavailable` when Redis failed.
pub(crate) async fn stop_run(
    store: &Store,
    run_id: &str,
    status: RunStatus,
    why: impl Fn(&Dag) -> String,
) -> StoreResult<StopOutcome> {
    let applied = store
        .apply_cas(run_id, |run, dag| {
            plan::stop(dag, run, status, &why(dag), now_ms()).ok_or(run.status)
        })
        .await?;
    Ok(match applied {
        Ok(_) => {
            stop_children(store, run_id).await?;
            StopOutcome::Stopped
        }
        Err(finished) => StopOutcome::Finished(finished),
    })
}

/// Stops the unfinished child runs of `run` (and theirs, in turn): a stopped parent takes its
/// children with it, as in Dagu.
fn stop_children<'a>(
    store: &'a Store,
    run: &'a str,
) -> Pin<Box<dyn Future<Output = StoreResult<usize>> + Send + 'a>> {
    Box::pin(async move {
        let mut stopped = 0;
        let mut start = 0;
        const PAGE: usize = 500;
        loop {
            let (total, ids) = store.children(run, start, PAGE).await?;
            if ids.is_empty() {
                break;
            }
            for (id, child) in ids.iter().zip(store.runs(&ids).await?) {
                if child.is_none_or(|c| c.status.is_final()) {
                    continue;
                }
                let why = |_: &Dag| format!("its parent run {run} was stopped");
                match stop_run(store, id, RunStatus::Aborted, why).await {
                    Ok(StopOutcome::Stopped) => stopped += 1,
                    Ok(StopOutcome::Finished(_)) => {}
                    Err(e) => warn!(run.id = %id, cause = %e, "stopping a child run failed"),
                }
            }
            start += ids.len();
            if start as u64 >= total {
                break;
            }
        }
        Ok(stopped)
    })
}
