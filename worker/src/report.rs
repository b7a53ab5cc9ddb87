//! Reporting step attempts, batched and never silently lost: a final report is applied to its
//! run by this worker, the rest is handed to the coordinators.
//!
//! Step tasks queue [`Report`]s on a bounded channel (a `Started` report only for a step still
//! running after [`STARTED_REPORT_DELAY`]); one reporter task ([`run`]) drains
//! whatever is queued (one blocking receive, then everything else that is already there), drops
//! each `Started` report whose final report is in the same batch, and writes the batch:
//!
//! * reports are first applied by this worker itself ([`apply_own`]: read the runs, unless the
//!   claim loop read them while the steps ran ([`RunHint`]), plan with
//!   [`plan::advance`], one `apply_transition` compare-and-set per run that also acknowledges
//!   the ready entries of final reports and stores their log tails); only what that leaves
//!   goes to the results stream, in one pipeline:
//! * `XADD <results> * r <msgpack StepReport>` for a started report;
//! * `scripts::COMPLETE_STEP` for a final report (KEYS ready stream, results stream, the step's
//!   log tail key; ARGV the workers' group, the ready entry id, the msgpack report, the tail,
//!   the total bytes of output, the attempt), which adds the report, stores the tail, and
//!   acknowledges and deletes the ready entry in one atomic step.
//!
//! A call step's report ([`ReportKind::Call`]) always takes the `COMPLETE_STEP` path, never
//! [`apply_own`]: only a coordinator applies it, after creating the step's child runs.
//!
//! While a step runs, its tail is published apart from the reports ([`live_tail_writer`]).
//!
//! Whatever accumulates while a write is in flight goes in the next one, so batches grow with
//! load. A failed write keeps its batch and is retried with back-off, forever while the worker
//! runs and for up to [`FLUSH_TIMEOUT`] once it is draining at shutdown; what is still not
//! delivered then is logged report by report. Delivery is at least once: a write whose reply
//! was lost, or a pipeline re-run after NOSCRIPT, can add a report twice, and a report is
//! applied once per (step, attempt token). The channel's bound is back-pressure: when
//! Redis does not take reports, step tasks wait to queue theirs while holding their slots, so
//! the worker stops claiming new steps.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dagrid_shared::dag::Dag;
use dagrid_shared::model::{self, ReportKind, RunRecord, StepReport, StepTask};
use dagrid_shared::redis::fields::{run_field, stream_field};
use dagrid_shared::redis::keys::WORKER_GROUP;
use dagrid_shared::redis::scripts;
use dagrid_shared::transition::{self, Counted, TailWrite, WorkerPart};
use dagrid_shared::{plan, ConnError, Redis};
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

/// A claimed ready entry: the stream it was read from, its id, and its run as read while the
/// step ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryRef {
    /// The ready stream's key.
    pub(crate) stream: Arc<str>,
    /// The entry id.
    pub(crate) id: String,
    /// The run's hash, when the claim loop read it while the step ran.
    pub(crate) hint: Arc<RunHint>,
}

/// A step's run hash as read while the step ran (`HGETALL` of `{ns}:run:<id>`, sent by the
/// claim loop with a later claim, [`crate::claim`]), so that the final report's first
/// compare-and-set needs no read of its own: one round trip to Redis per step instead of two.
/// A hint gone stale (another report moved the run's `ver`) only costs that compare-and-set,
/// which then fails; the run is read again as without a hint.
#[derive(Debug, Default)]
pub(crate) struct RunHint {
    /// The run hash's fields, once read.
    fields: OnceLock<BTreeMap<String, Vec<u8>>>,
    /// Set once the attempt's final report is made: a read sent after that would come too late.
    closed: AtomicBool,
}

impl RunHint {
    /// Stores the run hash read for it (an empty hash, a run that is gone, is not stored).
    pub(crate) fn fill(&self, fields: BTreeMap<String, Vec<u8>>) {
        if !fields.is_empty() {
            let _ = self.fields.set(fields);
        }
    }

    /// True while a read of the run would still be used: the attempt has not ended and no
    /// read was stored.
    pub(crate) fn wanted(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.fields.get().is_none()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn fields(&self) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.fields.get()
    }
}

/// Two hints are equal when they hold the same fields (a hint is no part of a report's
/// identity).
impl PartialEq for RunHint {
    fn eq(&self, other: &Self) -> bool {
        self.fields.get() == other.fields.get()
    }
}

impl Eq for RunHint {}

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
        /// The ready stream holding that entry.
        stream: Arc<str>,
        /// The tail of the combined output, stored in the step's log tail key.
        tail: Vec<u8>,
        /// Total bytes of combined output (the tail is the end of them).
        written: u64,
        /// The run as read while the step ran, when it was.
        hint: Arc<RunHint>,
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
            call: None,
            children: 0,
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

    /// The final report of `task`, read from ready entry `entry`.
    pub(crate) fn finished(
        task: &StepTask,
        worker: &str,
        entry: EntryRef,
        outcome: Outcome,
    ) -> Self {
        let EntryRef {
            stream,
            id: entry_id,
            hint,
        } = entry;
        hint.close();
        Report::Finished {
            stream,
            hint,
            report: StepReport {
                call: None,
                children: 0,
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

    /// The final report of call step `task`, read from ready entry `entry`: its child runs
    /// ([`ReportKind::Call`] with `plan`), started and finished now, with no log. It always goes
    /// to the coordinators (see [`write`]).
    pub(crate) fn call(
        task: &StepTask,
        worker: &str,
        entry: EntryRef,
        plan: dagrid_shared::dag::CallPlan,
    ) -> Self {
        let now = model::now_ms();
        let EntryRef {
            stream,
            id: entry_id,
            hint,
        } = entry;
        hint.close();
        Report::Finished {
            stream,
            hint,
            report: StepReport {
                call: Some(plan),
                children: 0,
                run_id: task.run_id.clone(),
                step: task.step.clone(),
                attempt: task.attempt,
                token: task.token.clone(),
                worker: worker.to_string(),
                kind: ReportKind::Call,
                started_ms: now,
                finished_ms: Some(now),
                exit_code: None,
                error: None,
                output: None,
                log_path: None,
                output_matched: false,
                repeat: false,
                resolved: resolved_of(task),
            },
            entry_id,
            tail: Vec::new(),
            written: 0,
        }
    }

    /// A call step's report, which only a coordinator applies (it creates the child runs
    /// first).
    fn for_coordinators(&self) -> bool {
        self.report().kind == ReportKind::Call
    }

    fn report(&self) -> &StepReport {
        match self {
            Report::Started(r) | Report::Finished { report: r, .. } => r,
        }
    }

    /// The run as read while a final report's step ran, when it was.
    fn hint(&self) -> Option<&BTreeMap<String, Vec<u8>>> {
        match self {
            Report::Started(_) => None,
            Report::Finished { hint, .. } => hint.fields(),
        }
    }
}

/// The `ver` field of a run hash (0 when missing or not a number).
fn version_of(fields: &BTreeMap<String, Vec<u8>>) -> u64 {
    fields
        .get(run_field::VERSION)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
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
        // The tasks woken with this report go first (the runtime has one thread): the claim
        // loop starts the step claimed ahead of the slot the report freed, so its spawn
        // request leaves before this task plans. The yield ends after the runtime's next
        // poll of its I/O driver, in the same turn as the claim loop's own, so the claim and
        // this write still leave in one write.
        tokio::task::yield_now().await;
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

/// Rounds of read, plan and compare-and-set a worker tries for its final reports before it
/// hands what is left to the coordinators through the results stream.
pub(crate) const APPLY_ROUNDS: usize = 3;

/// Writes a batch: its reports are applied to their runs by this worker ([`apply_own`]);
/// what that leaves (lost compare-and-sets, runs or versions it cannot read), and every
/// call step's report ([`ReportKind::Call`]: a coordinator creates the child runs before it
/// applies it), goes to the results stream, in one pipeline and in batch order.
async fn write(redis: &Redis, batch: &[Report]) -> Result<(), ConnError> {
    let own: Vec<&Report> = batch.iter().filter(|r| !r.for_coordinators()).collect();
    let left = apply_own(redis, &own, || async {}).await?;
    // Reports by address, to keep batch order.
    let left: HashSet<usize> = left
        .into_iter()
        .map(|r| std::ptr::from_ref(r) as usize)
        .collect();
    let to_results: Vec<&Report> = batch
        .iter()
        .filter(|r| r.for_coordinators() || left.contains(&(std::ptr::from_ref(*r) as usize)))
        .collect();
    write_to_results(redis, &to_results).await
}

/// Applies reports (`started` and final ones) to their runs from this worker, as a
/// coordinator would from the
/// results stream, so that one script call per run takes the reports and advances the run:
/// one pipeline of HGETALL reads the runs (those with no [`RunHint`]: a final report whose run
/// was read while its step ran starts from that, the newest by `ver` when a run has several,
/// in a first round of its own), [`plan::advance`] plans each (the DAG version from
/// the worker's cache, [`crate::task::SPECS`]), and one pipeline of `apply_transition` calls
/// writes them, each a compare-and-set on the run's version that also acknowledges and
/// deletes the attempts' ready entries and stores their log tails
/// ([`transition::call`] with a [`WorkerPart`]). A run whose version moved is read again, up to
/// [`APPLY_ROUNDS`] rounds; `before_write` runs before each round's write (tests move the
/// version there).
///
/// Returns the reports this worker did not apply, for the results stream: those of runs whose
/// compare-and-set lost every round, of runs that do not exist or do not decode, whose DAG
/// version cannot be read, or whose ready entry is on another stream than the run's (its priority and worker selector).
///
/// # Errors
/// Redis errors; the caller retries the whole batch, which is harmless: a report counts only
/// while its step's token matches and the step is not final.
async fn apply_own<'r, F, Fut>(
    redis: &Redis,
    reports: &[&'r Report],
    mut before_write: F,
) -> Result<Vec<&'r Report>, ConnError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let keys = redis.keys();
    let mut by_run: BTreeMap<&str, Vec<&'r Report>> = BTreeMap::new();
    for r in reports {
        by_run
            .entry(r.report().run_id.as_str())
            .or_default()
            .push(*r);
    }
    let mut left = Vec::new();
    // The runs read while their steps ran ([`RunHint`]): the first round uses them instead of
    // reading them, and is a round more than APPLY_ROUNDS, since a stale one just fails.
    let mut hints: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = by_run
        .iter()
        .filter_map(|(id, group)| {
            let newest = group
                .iter()
                .filter_map(|r| r.hint())
                .max_by_key(|fields| version_of(fields))?;
            Some((*id, newest.clone()))
        })
        .collect();
    let rounds = APPLY_ROUNDS + usize::from(!hints.is_empty());
    for _ in 0..rounds {
        if by_run.is_empty() {
            break;
        }
        let ids: Vec<&str> = by_run.keys().copied().collect();
        let mut hinted = std::mem::take(&mut hints);
        let mut read = redis::pipe();
        let unread: Vec<&&str> = ids.iter().filter(|id| !hinted.contains_key(**id)).collect();
        for id in &unread {
            read.cmd("HGETALL").arg(keys.run(id));
        }
        let hashes: Vec<BTreeMap<String, Vec<u8>>> = if unread.is_empty() {
            Vec::new()
        } else {
            let mut c = redis.conn().await?;
            read.query_async(&mut *c).await?
        };
        let mut hashes = hashes.into_iter();
        let now = model::now_ms();
        let mut pipe = redis::pipe();
        let mut written = Vec::new();
        for id in ids {
            let fields = match hinted.remove(id) {
                Some(fields) => fields,
                None => hashes.next().unwrap_or_default(),
            };
            let group = &by_run[id];
            let Some((run, dag)) = run_and_dag(redis, id, fields, group).await else {
                if let Some(g) = by_run.remove(id) {
                    left.extend(g);
                }
                continue;
            };
            let reports: Vec<StepReport> = group.iter().map(|r| r.report().clone()).collect();
            let t = plan::advance(&dag, &run, &reports, now);
            for why in &t.ignored {
                tracing::warn!(run.id = %id, reason = %why, "report ignored");
            }
            let mut part = WorkerPart::default();
            for r in group {
                if let Report::Finished {
                    report,
                    entry_id,
                    tail,
                    written,
                    ..
                } = r
                {
                    part.entries.push((report.step.clone(), entry_id.clone()));
                    // A first attempt that wrote nothing has no tail to store and none of an
                    // earlier attempt to replace (attempts count on from 1, manual retries
                    // too): its tail would be a no-op, and costs the script an HGET.
                    if report.attempt <= 1 && *written == 0 {
                        continue;
                    }
                    part.tails.push(TailWrite {
                        key: keys.log_tail(&report.run_id, &report.step),
                        tail: tail.clone(),
                        size: *written,
                        attempt: report.attempt,
                    });
                }
            }
            pipe.invoke_script(&transition::call(keys, &dag, &run, &[], &t, Some(&part))?);
            written.push((id, Counted::of(&run, &t)));
        }
        if written.is_empty() {
            continue;
        }
        before_write().await;
        let replies = redis.script_pipeline(&pipe).await?;
        for ((id, counted), reply) in written.into_iter().zip(replies) {
            match reply {
                // The version moved: read again next round.
                Value::Int(0) => {}
                _ => {
                    counted.count();
                    by_run.remove(id);
                }
            }
        }
    }
    for (id, group) in by_run {
        tracing::debug!(run.id = %id, "the run kept changing; its reports go to the coordinators");
        left.extend(group);
    }
    Ok(left)
}

/// The run `id` (from its HGETALL `fields`) and its DAG version, or `None` when this worker
/// leaves `group`'s reports to the coordinators (see [`apply_own`]).
async fn run_and_dag(
    redis: &Redis,
    id: &str,
    fields: BTreeMap<String, Vec<u8>>,
    group: &[&Report],
) -> Option<(RunRecord, std::sync::Arc<Dag>)> {
    let run = match RunRecord::from_fields(id, fields) {
        Ok(Some(run)) => run,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(run.id = %id, cause = %e, "cannot read the run; its reports go to the coordinators");
            return None;
        }
    };
    let dag = crate::task::SPECS.spec(redis, &run.spec).await.ok()?;
    // Each attempt's ready entry must be on its step's stream (the one apply_transition acks
    // it on); else the coordinators sort it out.
    let keys = redis.keys();
    if group.iter().any(|r| {
        matches!(r, Report::Finished { stream, report, .. }
            if **stream != *keys.ready_of(run.priority.get(), &dag.selector_of(&report.step)))
    }) {
        return None;
    }
    Some((run, dag))
}

/// Writes reports this worker did not apply to the results stream, in one pipeline.
async fn write_to_results(redis: &Redis, batch: &[&Report]) -> Result<(), ConnError> {
    if batch.is_empty() {
        return Ok(());
    }
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
                    .arg(stream_field::REPORT)
                    .arg(encoded)
                    .ignore();
            }
            Report::Finished {
                report,
                entry_id,
                stream,
                tail,
                written,
                ..
            } => {
                let mut call = scripts::COMPLETE_STEP.key(&**stream);
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
pub(crate) mod tests {
    use super::*;

    /// A private redis-server and a connection to namespace `t` with the consumer groups made.
    pub(crate) async fn redis_with_groups() -> (dagrid_shared::redis::embedded::EmbeddedRedis, Redis)
    {
        let server = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "t").unwrap();
        dagrid_shared::redis::conn::ensure_groups(&redis)
            .await
            .unwrap();
        (server, redis)
    }

    fn report(step: &str, attempt: u32, kind: ReportKind) -> StepReport {
        StepReport {
            call: None,
            children: 0,
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
            stream: Arc::from("{dagrid}:ready:5"),
            tail: Vec::new(),
            written: 0,
            hint: Arc::default(),
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
            stream: Arc::from(redis.keys().ready(5)),
            tail: tail.to_vec(),
            written: tail.len() as u64,
            hint: Arc::default(),
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
        let (_server, redis) = redis_with_groups().await;
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

    /// A one-step run `r` of a DAG version stored as a coordinator leaves it once its step is
    /// queued (run hash at version 1, the spec key, active in its queue), its ready entry
    /// claimed by consumer `w`, and the final report of that attempt.
    async fn queued_one_step_run(redis: &Redis) -> Report {
        use dagrid_shared::dag::Priority;
        let dag = Dag::parse("name: d\nsteps:\n  - name: s\n    command: \"true\"\n", "d").unwrap();
        let ctx = plan::RunCtx {
            id: "r",
            params: &[],
            priority: Priority::NORMAL,
            resolved: None,
        };
        let (steps, tasks) = plan::start(&dag, ctx, 1);
        let keys = redis.keys();
        let mut c = redis.conn().await.unwrap();
        let mut hset = redis::cmd("HSET");
        hset.arg(keys.run("r"))
            .arg(run_field::DAG)
            .arg("d")
            .arg(run_field::SPEC)
            .arg("v1")
            .arg(run_field::STATUS)
            .arg("running")
            .arg(run_field::VERSION)
            .arg(1)
            .arg(run_field::PRIORITY)
            .arg(5);
        for (name, state) in &steps {
            hset.arg(format!("{}{name}", run_field::STEP_PREFIX))
                .arg(dagrid_shared::stored::encode_step(state).unwrap());
        }
        hset.query_async::<()>(&mut c).await.unwrap();
        redis::cmd("SET")
            .arg(keys.spec("v1"))
            .arg(model::encode(&dag).unwrap())
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        redis::cmd("SADD")
            .arg(keys.active("d"))
            .arg("r")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        let entry_id: String = redis::cmd("XADD")
            .arg(keys.ready(5))
            .arg("*")
            .arg("t")
            .arg("x")
            .query_async(&mut c)
            .await
            .unwrap();
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(WORKER_GROUP)
            .arg("w")
            .arg("STREAMS")
            .arg(keys.ready(5))
            .arg(">")
            .query_async::<Value>(&mut c)
            .await
            .unwrap();
        let task = &tasks[0];
        let mut report = report(&task.step, task.attempt, ReportKind::Succeeded);
        report.token = task.token.clone();
        report.finished_ms = Some(2);
        report.exit_code = Some(0);
        Report::Finished {
            report,
            entry_id,
            stream: Arc::from(keys.ready(5)),
            tail: b"out".to_vec(),
            written: 3,
            hint: Arc::default(),
        }
    }

    /// A connection to namespace `ns` of `server`, with the consumer groups made, and the
    /// final report of a one-step run queued there ([`queued_one_step_run`]).
    async fn one_step_run_in(
        server: &dagrid_shared::redis::embedded::EmbeddedRedis,
        ns: &str,
    ) -> (Redis, Report) {
        let redis = Redis::open(&server.url(), ns).unwrap();
        dagrid_shared::redis::conn::ensure_groups(&redis)
            .await
            .unwrap();
        let fin = queued_one_step_run(&redis).await;
        (redis, fin)
    }

    async fn counts(redis: &Redis) -> (String, u64, u64, u64) {
        let keys = redis.keys();
        let mut c = redis.conn().await.unwrap();
        let status: String = redis::cmd("HGET")
            .arg(keys.run("r"))
            .arg("status")
            .query_async(&mut c)
            .await
            .unwrap();
        let results: u64 = redis::cmd("XLEN")
            .arg(keys.results())
            .query_async(&mut c)
            .await
            .unwrap();
        let ready: u64 = redis::cmd("XLEN")
            .arg(keys.ready(5))
            .query_async(&mut c)
            .await
            .unwrap();
        let active: u64 = redis::cmd("SCARD")
            .arg(keys.active("d"))
            .query_async(&mut c)
            .await
            .unwrap();
        (status, results, ready, active)
    }

    /// Moves run `r`'s version, as another writer would.
    async fn bump(redis: &Redis) {
        let mut c = redis.conn().await.unwrap();
        redis::cmd("HINCRBY")
            .arg(redis.keys().run("r"))
            .arg("ver")
            .arg(1)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }

    /// A worker applies its own final report: the run finishes in the same script call that
    /// acknowledges and deletes the ready entry and stores the tail, and nothing goes to the
    /// results stream. A compare-and-set lost once is read again and won; lost every round,
    /// the report goes to the results stream (complete_step) for the coordinators.
    #[tokio::test]
    async fn a_worker_applies_its_final_report_retries_a_lost_cas_then_falls_back() {
        let server = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");

        // Applied at the first try.
        let (redis, fin) = one_step_run_in(&server, "a").await;
        let Report::Finished { report: r, .. } = &fin else {
            unreachable!()
        };
        let mut started = r.clone();
        started.kind = ReportKind::Started;
        let started = Report::Started(started);
        let left = apply_own(&redis, &[&started], || async {}).await.unwrap();
        assert!(left.is_empty());
        assert_eq!(
            counts(&redis).await,
            ("running".into(), 0, 1, 1),
            "a started report is applied too, its ready entry kept"
        );
        let left = apply_own(&redis, &[&fin], || async {}).await.unwrap();
        assert!(left.is_empty());
        assert_eq!(counts(&redis).await, ("succeeded".into(), 0, 0, 0));
        assert_eq!(stored_tail(&redis).await, Some((b"out".to_vec(), 3, 1)));
        // Applying it again (a lost reply, a retried batch) changes nothing.
        assert!(apply_own(&redis, &[&fin], || async {})
            .await
            .unwrap()
            .is_empty());
        assert_eq!(counts(&redis).await, ("succeeded".into(), 0, 0, 0));

        // One lost compare-and-set, then won.
        let (redis, fin) = one_step_run_in(&server, "b").await;
        let mut rounds = 0;
        let left = apply_own(&redis, &[&fin], || {
            rounds += 1;
            let first = rounds == 1;
            let redis = redis.clone();
            async move {
                if first {
                    bump(&redis).await;
                }
            }
        })
        .await
        .unwrap();
        assert!(left.is_empty());
        assert_eq!(rounds, 2, "read again after the lost compare-and-set");
        assert_eq!(counts(&redis).await, ("succeeded".into(), 0, 0, 0));

        // Lost every round: handed to the coordinators through the results stream.
        let (redis, fin) = one_step_run_in(&server, "c").await;
        let mut rounds = 0;
        let left = apply_own(&redis, &[&fin], || {
            rounds += 1;
            let redis = redis.clone();
            async move { bump(&redis).await }
        })
        .await
        .unwrap();
        assert_eq!(rounds, APPLY_ROUNDS);
        assert_eq!(left, vec![&fin]);
        assert_eq!(counts(&redis).await, ("running".into(), 0, 1, 1));
        // What write() then does with it: complete_step adds it to the results stream and
        // acknowledges the ready entry; the run is left to a coordinator.
        write_to_results(&redis, &left).await.unwrap();
        assert_eq!(counts(&redis).await, ("running".into(), 1, 0, 1));
    }

    /// Fills `fin`'s hint with run `r` as it is now, as the claim loop does while the step runs.
    async fn read_into_hint(redis: &Redis, fin: &Report) {
        let mut c = redis.conn().await.unwrap();
        let fields: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(redis.keys().run("r"))
            .query_async(&mut c)
            .await
            .unwrap();
        let Report::Finished { hint, .. } = fin else {
            unreachable!()
        };
        hint.fill(fields);
    }

    /// HGETALL calls the server has run since its stats were last reset.
    async fn hgetalls(redis: &Redis) -> u64 {
        let mut c = redis.conn().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hgetall:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A final report whose run was read while its step ran (its hint) is applied with no read
    /// of its own; a hint gone stale (the version moved since) costs one lost compare-and-set,
    /// then the run is read and the report applied, with the usual rounds still to go.
    #[tokio::test]
    async fn a_final_report_uses_the_run_read_while_its_step_ran() {
        let server = dagrid_shared::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let reset = |redis: Redis| async move {
            let mut c = redis.conn().await.unwrap();
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        };

        let (redis, fin) = one_step_run_in(&server, "a").await;
        read_into_hint(&redis, &fin).await;
        reset(redis.clone()).await;
        let left = apply_own(&redis, &[&fin], || async {}).await.unwrap();
        assert!(left.is_empty());
        assert_eq!(counts(&redis).await, ("succeeded".into(), 0, 0, 0));
        assert_eq!(hgetalls(&redis).await, 0, "no read of the run");

        let (redis, fin) = one_step_run_in(&server, "b").await;
        read_into_hint(&redis, &fin).await;
        bump(&redis).await;
        reset(redis.clone()).await;
        let mut rounds = 0;
        let left = apply_own(&redis, &[&fin], || {
            rounds += 1;
            async {}
        })
        .await
        .unwrap();
        assert!(left.is_empty());
        assert_eq!(rounds, 2, "the stale hint's round, then one with a read");
        assert_eq!(hgetalls(&redis).await, 1);
        assert_eq!(counts(&redis).await, ("succeeded".into(), 0, 0, 0));

        // Lost every round: the hint's round comes on top of APPLY_ROUNDS.
        let (redis, fin) = one_step_run_in(&server, "c").await;
        read_into_hint(&redis, &fin).await;
        let mut rounds = 0;
        let left = apply_own(&redis, &[&fin], || {
            rounds += 1;
            let redis = redis.clone();
            async move { bump(&redis).await }
        })
        .await
        .unwrap();
        assert_eq!(rounds, APPLY_ROUNDS + 1);
        assert_eq!(left, vec![&fin]);
    }

    /// A worker that finishes a run while runs wait in its queue leaves the admission pass to
    /// the coordinators: the same script call adds an admission request (field `a` = the
    /// queue) to the results stream.
    #[tokio::test]
    async fn finishing_a_run_with_runs_waiting_in_its_queue_asks_for_admission() {
        let (_server, redis) = redis_with_groups().await;
        let fin = queued_one_step_run(&redis).await;
        let mut c = redis.conn().await.unwrap();
        redis::cmd("ZADD")
            .arg(redis.keys().waiting("d"))
            .arg(0)
            .arg("other")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        assert!(apply_own(&redis, &[&fin], || async {})
            .await
            .unwrap()
            .is_empty());
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(redis.keys().results())
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        let fields: Vec<_> = entries.ids.iter().map(|e| e.get::<String>("a")).collect();
        assert_eq!(fields, vec![Some("d".to_string())]);
        assert_eq!(counts(&redis).await.0, "succeeded");
    }

    /// A call step's report is never applied by its worker, even when it could be (the run
    /// and its DAG version are readable, nothing else writes): it goes to the results stream
    /// through complete_step, which acknowledges and deletes the ready entry, in batch order
    /// with the reports the worker does not apply.
    #[tokio::test]
    async fn a_call_report_always_goes_to_the_coordinators() {
        let (_server, redis) = redis_with_groups().await;
        let mut fin = queued_one_step_run(&redis).await;
        let plan = dagrid_shared::dag::CallPlan {
            dag: "child".into(),
            children: vec![vec![(Some("P".into()), "1".into())]],
            parallel: None,
        };
        if let Report::Finished {
            report,
            tail,
            written,
            ..
        } = &mut fin
        {
            report.kind = ReportKind::Call;
            report.exit_code = None;
            report.call = Some(plan.clone());
            tail.clear();
            *written = 0;
        }
        let mut elsewhere = report("x", 1, ReportKind::Started);
        elsewhere.run_id = "no-such-run".into();
        let batch = vec![Report::Started(elsewhere.clone()), fin];
        write(&redis, &batch).await.unwrap();
        let (status, _, ready, active) = counts(&redis).await;
        assert_eq!(
            (status.as_str(), ready, active),
            ("running", 0, 1),
            "not applied here; the entry acknowledged and deleted"
        );
        let mut c = redis.conn().await.unwrap();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(redis.keys().results())
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut sent: Vec<StepReport> = entries
            .ids
            .iter()
            .map(|e| model::decode(&e.get::<Vec<u8>>("r").unwrap()).unwrap())
            .collect();
        // The first pipeline on a fresh server meets NOSCRIPT and runs again: the started
        // report may be there twice (delivery is at least once).
        sent.dedup();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], elsewhere);
        assert_eq!(sent[1].kind, ReportKind::Call);
        assert_eq!(sent[1].call, Some(plan));
        let pending: (u64,) = {
            let v: Vec<Value> = redis::cmd("XPENDING")
                .arg(redis.keys().ready(5))
                .arg(WORKER_GROUP)
                .query_async(&mut c)
                .await
                .unwrap();
            match v.first() {
                Some(Value::Int(n)) => (*n as u64,),
                other => panic!("XPENDING: {other:?}"),
            }
        };
        assert_eq!(pending, (0,));
    }

    /// A final report of a run that does not exist goes to the results stream as before.
    #[tokio::test]
    async fn a_report_of_a_missing_run_goes_to_the_results_stream() {
        let (_server, redis) = redis_with_groups().await;
        let fin = final_with_output(&redis, 1, b"").await;
        let left = apply_own(&redis, &[&fin], || async {}).await.unwrap();
        assert_eq!(left, vec![&fin]);
    }
}
