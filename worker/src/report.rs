//! Reporting step attempts to the coordinators, batched and never silently lost.
//!
//! Step tasks queue [`Report`]s on a bounded channel (a `Started` report only for a step still
//! running after [`STARTED_REPORT_DELAY`]); one reporter task ([`run`]) drains
//! whatever is queued (one blocking receive, then everything else that is already there), drops
//! each `Started` report whose final report is in the same batch, and writes the batch in one
//! pipeline:
//!
//! * `XADD <results> * r <msgpack StepReport>` for a started report;
//! * `scripts::COMPLETE_STEP` for a final report (KEYS ready stream, results stream, the step's
//!   log tail key; ARGV the workers' group, the ready entry id, the msgpack report, the tail,
//!   the total bytes of output, the attempt), which adds the report, stores the tail, and
//!   acknowledges and deletes the ready entry in one atomic step.
//!
//! While a step runs, its tail is published apart from the reports ([`live_tail_writer`]).
//!
//! Whatever accumulates while a write is in flight goes in the next one, so batches grow with
//! load. A failed write keeps its batch and is retried with back-off, forever while the worker
//! runs and for up to [`FLUSH_TIMEOUT`] once it is draining at shutdown; what is still not
//! delivered then is logged report by report. Delivery is at least once: a write whose reply
//! was lost, or a pipeline re-run after NOSCRIPT, can add a report twice, and the coordinator
//! applies a report once per (step, attempt token). The channel's bound is back-pressure: when
//! Redis does not take reports, step tasks wait to queue theirs while holding their slots, so
//! the worker stops claiming new steps.

use std::collections::HashSet;
use std::time::Duration;

use dagrid_shared::keys::WORKER_GROUP;
use dagrid_shared::model::{self, ReportKind, StepReport, StepTask};
use dagrid_shared::{scripts, ConnError, Redis};
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::exec::{LiveWrite, Outcome};

/// How long undelivered reports are retried once the worker drains at shutdown (10 s).
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a step's process runs before its `started` report is sent (50 ms). A step that
/// ends sooner sends only its final report, which carries its start time (`started_ms`): the
/// coordinator then records the start and the end in one transition, and Redis sees one
/// report instead of two for the many short steps. A longer step shows `running` this much
/// later.
pub(crate) const STARTED_REPORT_DELAY: Duration = Duration::from_millis(50);

/// One report for the reporter to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// The step's process started.
    Started(StepReport),
    /// The attempt ended; delivering it acknowledges the ready entry.
    Finished {
        /// The final report.
        report: StepReport,
        /// The ready-stream entry the attempt came from.
        entry_id: String,
        /// The priority level of the ready stream holding that entry.
        priority: u8,
        /// The tail of the combined output, stored in the step's log tail key.
        tail: Vec<u8>,
        /// Total bytes of combined output (the tail is the end of them).
        written: u64,
    },
}

impl Report {
    /// The report that `task`'s process started at `started_ms`.
    pub(crate) fn started(
        task: &StepTask,
        worker: &str,
        started_ms: u64,
        log_path: &std::path::Path,
    ) -> Self {
        Report::Started(StepReport {
            run_id: task.run_id.clone(),
            step: task.step.clone(),
            attempt: task.attempt,
            token: task.token.clone(),
            worker: worker.to_string(),
            kind: ReportKind::Started,
            started_ms,
            finished_ms: None,
            exit_code: None,
            error: None,
            output: None,
            log_path: Some(log_path.display().to_string()),
            output_matched: false,
            repeat: false,
            resolved: resolved_of(task),
        })
    }

    /// The final report of `task`, read from ready entry `entry_id`.
    pub(crate) fn finished(
        task: &StepTask,
        worker: &str,
        entry_id: String,
        outcome: Outcome,
    ) -> Self {
        Report::Finished {
            priority: task.priority.get(),
            report: StepReport {
                run_id: task.run_id.clone(),
                step: task.step.clone(),
                attempt: task.attempt,
                token: task.token.clone(),
                worker: worker.to_string(),
                kind: outcome.kind,
                started_ms: outcome.started_ms,
                finished_ms: Some(outcome.finished_ms),
                exit_code: outcome.exit_code,
                error: outcome.error,
                output: outcome.output,
                log_path: Some(outcome.log_path.display().to_string()),
                output_matched: false,
                repeat: false,
                resolved: resolved_of(task),
            },
            entry_id,
            tail: outcome.tail,
            written: outcome.written,
        }
    }

    fn report(&self) -> &StepReport {
        match self {
            Report::Started(r) | Report::Finished { report: r, .. } => r,
        }
    }
}

/// Publishes the tail of `task`'s running attempt in its log tail key (`scripts::LIVE_TAIL`,
/// one call per publication; see [`crate::exec::Running::with_live_tail`] for when). A failure
/// is logged at debug level and dropped: the final report stores the tail anyway.
pub(crate) fn live_tail_writer(redis: Redis, task: &StepTask) -> LiveWrite {
    let key = redis.keys().log_tail(&task.run_id, &task.step);
    let attempt = task.attempt;
    Box::new(move |tail: Vec<u8>, written: u64| {
        let redis = redis.clone();
        let key = key.clone();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            let mut call = scripts::LIVE_TAIL.key(&key);
            call.arg(tail).arg(written).arg(attempt);
            pipe.invoke_script(&call);
            if let Err(e) = redis.script_pipeline(&pipe).await {
                tracing::debug!(cause = %e, "could not publish the running step's log tail");
            }
        })
    })
}

/// A channel for reports holding at most `capacity` undelivered ones.
pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Report>, mpsc::Receiver<Report>) {
    mpsc::channel(capacity.max(1))
}

/// Delivers reports until every sender is dropped and the channel is empty. `draining` is
/// cancelled once no more reports will come, which starts the [`FLUSH_TIMEOUT`] for retries.
pub(crate) async fn run(
    redis: Redis,
    mut reports: mpsc::Receiver<Report>,
    draining: CancellationToken,
) {
    let mut retry = Retry {
        backoff: Backoff::new(),
        flush_deadline: None,
        draining,
    };
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = reports.try_recv() {
            batch.push(more);
        }
        deliver(&redis, coalesce(batch), &mut retry).await;
    }
    tracing::debug!("reporter stopped: every report delivered or given up");
}

/// Retry state across batches.
struct Retry {
    backoff: Backoff,
    /// Set at the first failure seen while draining.
    flush_deadline: Option<Instant>,
    draining: CancellationToken,
}

/// Writes one batch, retrying as the module doc says.
async fn deliver(redis: &Redis, batch: Vec<Report>, retry: &mut Retry) {
    if batch.is_empty() {
        return;
    }
    loop {
        let err = match write(redis, &batch).await {
            Ok(()) => {
                retry.backoff.reset();
                return;
            }
            Err(e) => e,
        };
        let mut delay = retry.backoff.next_delay();
        if retry.draining.is_cancelled() {
            let deadline = *retry
                .flush_deadline
                .get_or_insert_with(|| Instant::now() + FLUSH_TIMEOUT);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                for r in &batch {
                    let rep = r.report();
                    tracing::error!(
                        run.id = %rep.run_id,
                        step = %rep.step,
                        attempt = rep.attempt,
                        kind = ?rep.kind,
                        cause = %err,
                        "report not delivered before shutdown; the coordinator will re-queue the step once this worker's heartbeat expires"
                    );
                }
                return;
            }
            delay = delay.min(left);
        }
        tracing::warn!(
            reports = batch.len(),
            cause = %err,
            retry_in = ?delay,
            "could not deliver step reports; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Drops each `Started` report whose `Finished` report (same run, step, attempt and token) is
/// in the same batch: the final report carries the start time too.
pub(crate) fn coalesce(batch: Vec<Report>) -> Vec<Report> {
    let finished: HashSet<(&str, &str, u32, &str)> = batch
        .iter()
        .filter_map(|r| match r {
            Report::Finished { report, .. } => Some(identity(report)),
            Report::Started(_) => None,
        })
        .collect();
    let keep: Vec<bool> = batch
        .iter()
        .map(|r| match r {
            Report::Started(report) => !finished.contains(&identity(report)),
            Report::Finished { .. } => true,
        })
        .collect();
    batch
        .into_iter()
        .zip(keep)
        .filter_map(|(r, keep)| keep.then_some(r))
        .collect()
}

fn identity(r: &StepReport) -> (&str, &str, u32, &str) {
    (&r.run_id, &r.step, r.attempt, &r.token)
}

/// Writes a batch in one pipeline.
async fn write(redis: &Redis, batch: &[Report]) -> Result<(), ConnError> {
    let keys = redis.keys();
    let mut pipe = redis::pipe();
    let mut finals = Vec::new();
    for r in batch {
        let encoded = match model::encode(r.report()) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Not reachable for StepReport; never retry what can never encode.
                tracing::error!(step = %r.report().step, cause = %e, "cannot encode a step report; dropping it");
                continue;
            }
        };
        match r {
            Report::Started(_) => {
                pipe.cmd("XADD")
                    .arg(keys.results())
                    .arg("*")
                    .arg("r")
                    .arg(encoded)
                    .ignore();
            }
            Report::Finished {
                report,
                entry_id,
                priority,
                tail,
                written,
            } => {
                let mut call = scripts::COMPLETE_STEP.key(keys.ready(*priority));
                call.key(keys.results())
                    .key(keys.log_tail(&report.run_id, &report.step))
                    .arg(WORKER_GROUP)
                    .arg(entry_id)
                    .arg(encoded)
                    .arg(tail.as_slice())
                    .arg(*written)
                    .arg(report.attempt);
                pipe.invoke_script(&call);
                finals.push(report);
            }
        }
    }
    let replies = redis.script_pipeline(&pipe).await?;
    for (report, reply) in finals.into_iter().zip(replies) {
        if matches!(reply, Value::Int(0)) {
            tracing::info!(
                run.id = %report.run_id,
                step = %report.step,
                attempt = report.attempt,
                "this worker no longer held the step's ready entry (it was reclaimed); reported anyway, the coordinator decides from the token"
            );
        }
    }
    Ok(())
}

/// The run's values when `task` evaluated them ([`dagrid_shared::model::DagValues`]): every
/// report of that attempt carries them, the first one that counts stores them in the run.
fn resolved_of(task: &StepTask) -> Option<dagrid_shared::model::Resolved> {
    task.dag_values
        .evaluate
        .as_ref()
        .and(task.dag_values.resolved.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(step: &str, attempt: u32, kind: ReportKind) -> StepReport {
        StepReport {
            run_id: "r".into(),
            step: step.into(),
            attempt,
            token: format!("t{attempt}"),
            worker: "w".into(),
            kind,
            started_ms: 1,
            finished_ms: None,
            exit_code: None,
            error: None,
            output: None,
            log_path: None,
            output_matched: false,
            repeat: false,
            resolved: None,
        }
    }

    fn finished(step: &str, attempt: u32) -> Report {
        Report::Finished {
            report: report(step, attempt, ReportKind::Succeeded),
            entry_id: "1-0".into(),
            priority: 5,
            tail: Vec::new(),
            written: 0,
        }
    }

    #[test]
    fn coalescing_drops_only_started_reports_finished_in_the_same_batch() {
        let a_started = Report::Started(report("a", 1, ReportKind::Started));
        let b_started = Report::Started(report("b", 1, ReportKind::Started));
        let a_retry_started = Report::Started(report("a", 2, ReportKind::Started));
        let batch = vec![
            a_started,
            b_started.clone(),
            a_retry_started.clone(),
            finished("a", 1),
        ];
        assert_eq!(
            coalesce(batch),
            vec![b_started, a_retry_started, finished("a", 1)]
        );
    }

    /// A final report with `written` bytes of output (`tail` their end) for attempt `attempt`
    /// of step `s`, from a fresh ready entry.
    async fn final_with_output(redis: &Redis, attempt: u32, tail: &[u8]) -> Report {
        let mut c = redis.conn().await.unwrap();
        let entry_id: String = redis::cmd("XADD")
            .arg(redis.keys().ready(5))
            .arg("*")
            .arg("t")
            .arg("x")
            .query_async(&mut c)
            .await
            .unwrap();
        Report::Finished {
            report: report("s", attempt, ReportKind::Succeeded),
            entry_id,
            priority: 5,
            tail: tail.to_vec(),
            written: tail.len() as u64,
        }
    }

    async fn stored_tail(redis: &Redis) -> Option<(Vec<u8>, u64, u32)> {
        let mut c = redis.conn().await.unwrap();
        let (tail, size, attempt): (Option<Vec<u8>>, Option<u64>, Option<u32>) =
            redis::cmd("HMGET")
                .arg(redis.keys().log_tail("r", "s"))
                .arg("tail")
                .arg("size")
                .arg("attempt")
                .query_async(&mut c)
                .await
                .unwrap();
        tail.map(|t| (t, size.unwrap(), attempt.unwrap()))
    }

    /// complete_step.lua stores no tail for an attempt that wrote nothing, unless an earlier
    /// attempt's tail is stored (then it replaces it); an attempt with output stores its
    /// tail; a late report of an earlier attempt never replaces a later one's; a STRING tail
    /// of an older version is replaced. Every report is added and its entry acknowledged.
    #[tokio::test]
    async fn final_reports_store_a_tail_only_when_there_is_one_to_keep() {
        let server = dagrid_shared::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "t").unwrap();
        dagrid_shared::conn::ensure_groups(&redis).await.unwrap();
        let mut c = redis.conn().await.unwrap();
        // Claims every entry added since the last claim, as consumer w.
        async fn claim(redis: &Redis, c: &mut dagrid_shared::Conn) {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(WORKER_GROUP)
                .arg("w")
                .arg("STREAMS")
                .arg(redis.keys().ready(5))
                .arg(">")
                .query_async::<Value>(c)
                .await
                .unwrap();
        }
        let quiet = final_with_output(&redis, 1, b"").await;
        claim(&redis, &mut c).await;
        write(&redis, &[quiet]).await.unwrap();
        assert_eq!(
            stored_tail(&redis).await,
            None,
            "nothing written, nothing stored"
        );

        let loud = final_with_output(&redis, 2, b"hello").await;
        claim(&redis, &mut c).await;
        write(&redis, &[loud]).await.unwrap();
        assert_eq!(stored_tail(&redis).await, Some((b"hello".to_vec(), 5, 2)));

        let late = final_with_output(&redis, 1, b"").await;
        claim(&redis, &mut c).await;
        write(&redis, &[late]).await.unwrap();
        assert_eq!(
            stored_tail(&redis).await,
            Some((b"hello".to_vec(), 5, 2)),
            "an earlier attempt never replaces a later one's tail"
        );

        let quiet_retry = final_with_output(&redis, 3, b"").await;
        claim(&redis, &mut c).await;
        write(&redis, &[quiet_retry]).await.unwrap();
        assert_eq!(
            stored_tail(&redis).await,
            Some((Vec::new(), 0, 3)),
            "a later attempt's empty output replaces an earlier tail"
        );

        redis::cmd("SET")
            .arg(redis.keys().log_tail("r", "s"))
            .arg("old")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        let quiet_over_string = final_with_output(&redis, 4, b"").await;
        claim(&redis, &mut c).await;
        write(&redis, &[quiet_over_string]).await.unwrap();
        assert_eq!(
            stored_tail(&redis).await,
            None,
            "an old STRING tail is dropped"
        );

        let results: u64 = redis::cmd("XLEN")
            .arg(redis.keys().results())
            .query_async(&mut c)
            .await
            .unwrap();
        let ready: u64 = redis::cmd("XLEN")
            .arg(redis.keys().ready(5))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            (results, ready),
            (5, 0),
            "every report added, every entry deleted"
        );
    }
}
