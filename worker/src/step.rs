//! A claimed step's whole life on this worker, from its claim to its final report: the
//! attempt's DAG values and preconditions, its process, the reasons to stop it
//! ([`stop_cause`]: lease lost or fenced, shutdown grace over, `timeoutSec` passed), and the
//! reports it queues. A call step runs no process: its child runs are expanded and reported
//! ([`crate::call`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::model::{self, now_ms, StepTask};
use dagrid_shared::{metrics, Redis};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call;
use crate::conditions;
use crate::env::{self, AttemptPaths, Inherited};
use crate::evaluate;
use crate::exec::{self, StopCause};
use crate::lease::Lease;
use crate::report::{self, EntryRef, Report};
use crate::supervisor::Launcher;

/// What a step task needs from its worker; cloned into each.
#[derive(Debug, Clone)]
pub(crate) struct StepRunner {
    pub(crate) redis: Redis,
    pub(crate) worker_id: String,
    pub(crate) log_dir: PathBuf,
    /// What the steps inherit of the worker's environment, computed once at start.
    pub(crate) inherited: Arc<Inherited>,
    /// How the steps' processes are started (the worker's step supervisor, or directly).
    pub(crate) launcher: Arc<Launcher>,
    /// Slots running a step now, for the heartbeat.
    pub(crate) busy: Arc<AtomicUsize>,
    /// How long the last step process of this worker ran, ms (`u64::MAX` before the first):
    /// the claim loop claims a step ahead of a free slot only while steps are short
    /// ([`crate::claim::AHEAD_BELOW`]).
    pub(crate) last_run_ms: Arc<AtomicU64>,
    pub(crate) reports: mpsc::Sender<Report>,
    /// Cancelled when the shutdown grace is over: the running steps are stopped and handed
    /// back.
    pub(crate) release: CancellationToken,
}

impl StepRunner {
    /// Runs one step and queues its reports; holds its slot until the final report is queued.
    /// The step is stopped when its lease is lost (no final report), when its timeout passes
    /// (`Failed`) or when [`StepRunner::release`] is cancelled (`Released`).
    pub(crate) async fn run(
        self,
        entry: EntryRef,
        mut task: StepTask,
        _slot: OwnedSemaphorePermit,
        lease: Lease,
    ) {
        let _busy = Busy::enter(&self.busy);
        tracing::debug!(
            waited_ms = now_ms().saturating_sub(task.queued_ms),
            "claimed step"
        );
        if lease.is_lost() {
            tracing::info!(
                "this worker lost the step's ready entry before it started; not running it"
            );
            return;
        }
        if self.release.is_cancelled() {
            let outcome = exec::released_before_start(&task, &self.log_dir);
            self.queue(Report::finished(&task, &self.worker_id, entry, outcome))
                .await;
            return;
        }
        if let Err(e) = evaluate::run_once(&mut task, &self.log_dir, &self.inherited).await {
            let message = format!("the DAG's values could not be evaluated: {e}");
            tracing::info!(error = %message, "step not started");
            let paths = AttemptPaths::new(&self.log_dir, &task);
            let outcome = conditions::not_started(&paths, model::ReportKind::Failed, message);
            self.queue(Report::finished(&task, &self.worker_id, entry, outcome))
                .await;
            return;
        }
        if let Some(outcome) = conditions::gate(&task, &self.log_dir, &self.inherited).await {
            tracing::info!(
                outcome = ?outcome.kind,
                error = outcome.error.as_deref().unwrap_or(""),
                "step not started: its preconditions"
            );
            self.queue(Report::finished(&task, &self.worker_id, entry, outcome))
                .await;
            return;
        }
        if task.call.is_some() {
            self.call(entry, task).await;
            return;
        }
        let mut ran = false;
        let outcome = match exec::spawn(&task, &self.log_dir, &self.inherited, &self.launcher).await
        {
            Ok(running) => {
                ran = true;
                // The entry id's ms part is when the attempt was put on the ready stream.
                if let Some(ready_ms) = entry.id.split('-').next().and_then(|ms| ms.parse().ok()) {
                    metrics::dispatch_latency(Duration::from_millis(
                        running.started_ms().saturating_sub(ready_ms),
                    ));
                }
                // Measured from the start, whatever queueing the started report takes.
                let limit = timeout_of(&task).map(|limit| (Instant::now() + limit, limit));
                let started = Report::started(
                    &task,
                    &self.worker_id,
                    running.started_ms(),
                    running.log_path(),
                );
                let wait = running
                    .with_live_tail(report::live_tail_writer(self.redis.clone(), &task))
                    .wait(stop_cause(&lease, &self.release, limit));
                tokio::pin!(wait);
                // A step that ends within the delay sends only its final report.
                tokio::select! {
                    biased;
                    outcome = &mut wait => outcome,
                    _ = tokio::time::sleep(report::STARTED_REPORT_DELAY) => {
                        self.queue(started).await;
                        wait.await
                    }
                }
            }
            Err(failed) => failed,
        };
        let took_ms = outcome.finished_ms.saturating_sub(outcome.started_ms);
        let error = outcome.error.as_deref().unwrap_or("");
        let outcome_label = match (&outcome.kind, outcome.stopped.map(|s| s.cause)) {
            (_, Some(StopCause::Fenced { after, .. })) => {
                tracing::warn!(
                    error,
                    took_ms,
                    lease_unrenewed_for = %humantime::format_duration(after),
                    log = %outcome.log_path.display(),
                    "step fenced: this worker could not renew its lease in time and stopped it; it reports the attempt lost once Redis answers, and a coordinator runs it again"
                );
                "lost"
            }
            (_, Some(StopCause::Lost)) => {
                tracing::info!(
                    error,
                    took_ms,
                    log = %outcome.log_path.display(),
                    "step stopped: this worker no longer holds it; no final report is sent"
                );
                "lost"
            }
            (model::ReportKind::Succeeded, _) => {
                tracing::debug!(took_ms, "step succeeded");
                "succeeded"
            }
            (model::ReportKind::Released, _) => {
                tracing::info!(error, took_ms, "step handed back at shutdown");
                "released"
            }
            _ => {
                tracing::info!(
                    exit_code = ?outcome.exit_code,
                    error,
                    took_ms,
                    "step failed"
                );
                "failed"
            }
        };
        if ran {
            metrics::step_finished(outcome_label, Duration::from_millis(took_ms));
            self.last_run_ms.store(took_ms, Ordering::Relaxed);
        }
        let fenced = matches!(
            outcome.stopped.map(|s| s.cause),
            Some(StopCause::Fenced { .. })
        );
        if outcome_label == "lost" && !fenced {
            return;
        }
        if fenced {
            // The step is dead already. Its entry stays pending for this worker; a coordinator
            // takes it back when this worker stays away past its lease, but a worker that comes
            // back sooner is alive again and would keep the entry for two leases. So the
            // attempt is reported lost, delivered whenever Redis answers: it acknowledges the
            // entry and the step runs again as a new attempt at once (a report that comes
            // after the coordinator's own `lost` carries a dead token and changes nothing).
            let mut lost = Report::finished(&task, &self.worker_id, entry, outcome);
            if let Report::Finished { report, .. } = &mut lost {
                report.kind = model::ReportKind::Lost;
            }
            self.queue(lost).await;
            return;
        }
        let matched = conditions::output_matched(&task, &outcome).await;
        let repeat =
            conditions::repeat_wanted(&task, &outcome, &self.log_dir, &self.inherited).await;
        let mut finished = Report::finished(&task, &self.worker_id, entry, outcome);
        if let Report::Finished { report, .. } = &mut finished {
            report.output_matched = matched;
            report.repeat = repeat;
        }
        self.queue(finished).await;
    }

    /// A call step ([`StepTask::call`]): no process; its child runs are expanded against the
    /// step's environment ([`call::plan`], off the async threads: a `parallel` step may have
    /// many items) and sent as a [`model::ReportKind::Call`] report, or a `Failed` one saying
    /// why they cannot be.
    async fn call(&self, entry: EntryRef, task: StepTask) {
        let paths = AttemptPaths::new(&self.log_dir, &task);
        let expanded = {
            let task = task.clone();
            let paths = paths.clone();
            let inherited = self.inherited.clone();
            tokio::task::spawn_blocking(move || {
                let env = env::step_env(&task, &paths, &inherited);
                match &task.call {
                    Some(c) => call::plan(c, &|name| env.get(name)),
                    None => Err("the step has no call".to_string()),
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("expanding the child runs failed: {e}")))
        };
        match expanded {
            Ok(plan) => {
                tracing::debug!(
                    dag = %plan.dag,
                    children = plan.children.len(),
                    "call step: child runs expanded"
                );
                self.queue(Report::call(&task, &self.worker_id, entry, plan))
                    .await;
            }
            Err(message) => {
                tracing::info!(error = %message, "call step failed");
                let outcome = conditions::not_started(&paths, model::ReportKind::Failed, message);
                self.queue(Report::finished(&task, &self.worker_id, entry, outcome))
                    .await;
            }
        }
    }

    /// Queues a report for the reporter task (logged when the reporter has stopped).
    pub(crate) async fn queue(&self, report: Report) {
        if self.reports.send(report).await.is_err() {
            tracing::error!("the reporter has stopped; a step report is lost");
        }
    }
}

/// The step's time limit: `timeout_ms`, none when absent or 0 (as Dagu's `timeoutSec: 0`).
fn timeout_of(task: &StepTask) -> Option<Duration> {
    task.timeout_ms
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// Completes with the first reason to stop a running step: its lease lost, the shutdown grace
/// over (`release`), or its time limit passed (`limit`: the deadline and the limit itself).
async fn stop_cause(
    lease: &Lease,
    release: &CancellationToken,
    limit: Option<(Instant, Duration)>,
) -> StopCause {
    let timed_out = async {
        match limit {
            Some((deadline, limit)) => {
                tokio::time::sleep_until(deadline).await;
                limit
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = lease.lost() => StopCause::Lost,
        () = lease.expired() => {
            let (after, grace) = lease.fence().unwrap_or_default();
            StopCause::Fenced { after, grace }
        }
        _ = release.cancelled() => StopCause::Released,
        limit = timed_out => StopCause::TimedOut(limit),
    }
}

/// Counts a slot as busy while alive.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::task;
    use crate::lease::Leases;

    #[test]
    fn no_timeout_or_zero_means_no_limit() {
        let mut t = task("true");
        assert_eq!(timeout_of(&t), None);
        t.timeout_ms = Some(0);
        assert_eq!(timeout_of(&t), None);
        t.timeout_ms = Some(1_500);
        assert_eq!(timeout_of(&t), Some(Duration::from_millis(1_500)));
    }

    #[tokio::test]
    async fn a_step_stops_for_the_first_cause_a_lost_lease_first() {
        let leases = Arc::new(Leases::default());
        let release = CancellationToken::new();
        let lease = leases.hold(&Arc::from("r5"), "1-0");
        let limit = Duration::from_millis(50);
        let soon = Some((Instant::now() + limit, limit));
        assert_eq!(
            stop_cause(&lease, &release, soon).await,
            StopCause::TimedOut(limit)
        );
        release.cancel();
        assert_eq!(
            stop_cause(&lease, &release, soon).await,
            StopCause::Released
        );
        leases.settle(&Arc::from("r5"), &["1-0".to_string()], &[]);
        assert_eq!(stop_cause(&lease, &release, None).await, StopCause::Lost);
    }
}
