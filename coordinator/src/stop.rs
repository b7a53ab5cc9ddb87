//! Ending a run before its steps are done: `dagrid stop` and `POST /api/v1/runs/{id}/stop`
//! (final status `aborted`), and a run past its DAG's `timeoutSec` (final status `failed`).
//!
//! A stop is one `apply_transition` compare-and-set (see [`crate::plan::stop`]): in one script
//! every step not final becomes `aborted`, the ready entries of queued and running steps are
//! acknowledged and deleted (a queued step is never claimed; the worker running a step finds
//! its claim gone at its next lease refresh and stops the process group with the step's
//! `signalOnStop`, SIGKILL after `maxCleanUpTimeSec`), waiting retries and the run's deadline
//! leave the delayed set, and the run leaves its queue. A run that lost the race to another
//! writer is read again and stopped again.
//!
//! A started run with handlers (Dagu `handlerOn`) does not end at once: the same script queues
//! its `abort` handler (else `exit`), or `exit` when a stop hits another handler, and the run
//! stays `running` until they are final; a stop while `exit` is queued or running ends the run.
//! See [`crate::plan::stop`].

use dagrid_shared::dag::Dag;
use dagrid_shared::model::{now_ms, RunStatus};
use dagrid_shared::ConnError;
use redis::Value;

use crate::orchestrator::transition_call;
use crate::plan;
use crate::store::Store;

/// Compare-and-set rounds before giving up (each lost round means another coordinator wrote
/// the run in between).
const MAX_ROUNDS: usize = 16;

/// What a stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// The run was ended with the requested status, or (a started run with handlers) its
    /// steps were aborted and its `abort` or `exit` handler queued; it ends once they are final.
    Stopped,
    /// The run had finished already, with this status; nothing changed.
    Finished(RunStatus),
    /// No run has this id.
    NotFound,
}

/// Ends run `run_id` with `status` (aborted or failed), every unfinished step getting
/// `why(dag)` as its error.
///
/// # Errors
/// Redis errors; and a [`ConnError`] when the run kept changing for [`MAX_ROUNDS`] rounds.
pub(crate) async fn stop_run(
    store: &Store,
    run_id: &str,
    status: RunStatus,
    why: impl Fn(&Dag) -> String,
) -> Result<StopOutcome, ConnError> {
    for _ in 0..MAX_ROUNDS {
        let Some(run) = store.run(run_id).await? else {
            return Ok(StopOutcome::NotFound);
        };
        let Some(dag) = store.spec(&run.spec).await? else {
            return Err(crate::store::encoding(format!(
                "run {run_id}: its DAG version {} is missing",
                run.spec
            )));
        };
        let Some(t) = plan::stop(&dag, &run, status, &why(&dag), now_ms()) else {
            return Ok(StopOutcome::Finished(run.status));
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(&transition_call(store, &dag, &run, &[], &t)?);
        let reply = store.script_pipeline(&pipe).await?;
        if !matches!(reply.first(), Some(Value::Int(0))) {
            crate::orchestrator::Counted::of(&run, &t).count();
        }
        match reply.first() {
            Some(Value::Int(0)) => continue,
            Some(Value::Int(2)) => {
                store.admit_waiting(&run.queue).await?;
                return Ok(StopOutcome::Stopped);
            }
            _ => return Ok(StopOutcome::Stopped),
        }
    }
    Err(crate::store::encoding(format!(
        "run {run_id} kept changing while being stopped; try again"
    )))
}
