//! The orchestrator: reads step reports from the results stream through the coordinators'
//! consumer group and moves each run along its DAG.
//!
//! The stream also carries admission requests (field `a`, a queue name): a worker that applied
//! its own reports and finished a run whose queue has waiting runs leaves the admission pass
//! to the coordinators ([`dagrid_shared::transition::call`]).
//!
//! Reports are read in batches (XREADGROUP COUNT, BLOCK: no polling) and grouped by run. For each
//! batch: one pipeline of HGETALL reads the runs, [`crate::plan::advance`] computes each run's
//! transition, and one pipeline of `apply_transition` scripts writes them, each a
//! compare-and-set on the run's version that also queues the released steps and acknowledges
//! the reports. Runs whose version moved (another coordinator replica applied a report of the
//! same run in between) are read again and retried ([`Store::apply_cas_many`], the one
//! compare-and-set loop), so replicas can share the stream.
//!
//! Entries left pending by a failed read or write of this replica are read again at once from
//! its own pending list; those of a coordinator that died are taken over with XAUTOCLAIM once
//! they have been idle for [`RECLAIM_IDLE`]; applying a report twice
//! is harmless, because a report only counts while its step's token matches and the step is not
//! final.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::model::{self, ReportKind, StepReport};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::calls;
use crate::plan;
use crate::store::calls::Fan;
use crate::store::results::ResultEntry;
use crate::store::transition::CasOutcome;
use crate::store::{Store, StoreResult};

/// Reports read per XREADGROUP.
const READ_COUNT: usize = 512;
/// Pending reports idle this long are taken over by XAUTOCLAIM.
pub(crate) const RECLAIM_IDLE: Duration = Duration::from_secs(10);
/// How often this replica looks for reports idle past [`RECLAIM_IDLE`].
const RECLAIM_EVERY: Duration = Duration::from_secs(5);

/// Reads and applies reports until `shutdown` is cancelled.
///
/// A read in flight is never abandoned: entries Redis delivered to an abandoned XREADGROUP would
/// sit in this consumer's pending list until the sweep takes them over. Reads block for at most
/// [`dagrid_shared::redis::conn::BLOCK_TIMEOUT`], so shutdown and the sweep are checked between reads.
pub(crate) async fn run(store: Arc<Store>, consumer: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut next_sweep = tokio::time::Instant::now();
    let mut conn = None;
    // Set after a failed read or apply: reports delivered to this consumer may sit in its
    // pending list (a reply lost with the connection, a write that failed); they are read again
    // at once (XREADGROUP … 0) instead of waiting for the idle sweep.
    let mut own_pending = false;
    while !shutdown.is_cancelled() {
        if tokio::time::Instant::now() >= next_sweep {
            if let Err(e) = reclaim(&store, &consumer).await {
                warn!(cause = %e, "reclaiming idle reports failed; will retry");
            }
            next_sweep = tokio::time::Instant::now() + RECLAIM_EVERY;
        }
        let from = if own_pending { "0" } else { ">" };
        match store
            .read_results(&consumer, &mut conn, from, READ_COUNT)
            .await
        {
            Ok(entries) => {
                backoff = Duration::from_millis(100);
                if own_pending && entries.len() < READ_COUNT {
                    own_pending = false;
                }
                if !entries.is_empty() {
                    if let Err(e) = apply(&store, entries).await {
                        own_pending = true;
                        warn!(cause = %e, "applying reports failed; they stay pending and are retried");
                    }
                }
            }
            Err(e) => {
                conn = None;
                own_pending = true;
                error!(cause = %e, retry_in = ?backoff, "reading the results stream failed");
                if e.is_no_group() {
                    // Redis lost the stream or its group (a restart without persistence): make
                    // every group again, or this loop would read NOGROUP forever.
                    match store.ensure_groups().await {
                        Ok(made) => warn!(groups = made, "made the consumer groups again"),
                        Err(e) => {
                            warn!(cause = %e, "cannot make the consumer groups again; will retry")
                        }
                    }
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Takes over reports idle for [`RECLAIM_IDLE`] (XAUTOCLAIM, looped with its cursor) and
/// applies them.
async fn reclaim(store: &Store, consumer: &str) -> StoreResult<()> {
    let mut cursor = "0-0".to_string();
    loop {
        let (next, entries) = store
            .autoclaim_results(consumer, RECLAIM_IDLE, &cursor, READ_COUNT)
            .await?;
        if !entries.is_empty() {
            debug!(count = entries.len(), "took over idle reports");
            apply(store, entries).await?;
        }
        if next == "0-0" {
            return Ok(());
        }
        cursor = next;
    }
}

#[derive(Default)]
/// The reports of one run in a batch, with their stream entry ids.
struct RunReports {
    entry_ids: Vec<String>,
    reports: Vec<StepReport>,
    /// Call steps whose children have all finished, with their fan hash (`None`: gone).
    done: Vec<(String, Option<Fan>)>,
}

/// Applies a batch of results-stream entries.
async fn apply(store: &Store, entries: Vec<ResultEntry>) -> StoreResult<()> {
    let mut by_run: BTreeMap<String, RunReports> = BTreeMap::new();
    let mut garbage = Vec::new();
    // Admission requests of workers that finished a run whose queue has waiting runs.
    let mut admit = BTreeSet::new();
    let mut admit_ids = Vec::new();
    for entry in entries {
        match entry {
            ResultEntry::Admit { id, queue } => {
                admit.insert(queue);
                admit_ids.push(id);
            }
            ResultEntry::Report { id, mut report } => {
                if report.kind == ReportKind::Call {
                    // The step's child runs are created before its report is applied.
                    calls::create_children(store, &mut report).await?;
                }
                let slot = by_run.entry(report.run_id.clone()).or_default();
                slot.entry_ids.push(id);
                slot.reports.push(*report);
            }
            ResultEntry::ChildrenDone { id, run, step } => {
                let fan = store.fan(&run, &step).await?;
                let slot = by_run.entry(run).or_default();
                slot.entry_ids.push(id);
                slot.done.push((step, fan));
            }
            ResultEntry::Garbage { id } => {
                error!(entry = %id, "results-stream entry is not a step report; dropping it");
                garbage.push(id);
            }
        }
    }
    if !garbage.is_empty() {
        ack(store, &garbage).await?;
    }
    if !admit.is_empty() {
        for q in &admit {
            store.admit_waiting(q).await?;
        }
        ack(store, &admit_ids).await?;
    }
    if by_run.is_empty() {
        return Ok(());
    }
    let entries: BTreeMap<String, Vec<String>> = by_run
        .iter()
        .map(|(id, g)| (id.clone(), g.entry_ids.clone()))
        .collect();
    let now = model::now_ms();
    // Call steps finished by this batch, whose fan hash goes once their run is written.
    let mut finishing: BTreeSet<(String, String)> = BTreeSet::new();
    let outcomes = store
        .apply_cas_many(entries, |run_id, run, dag| {
            let group = &by_run[run_id];
            let mut reports = group.reports.clone();
            for (step, fan) in &group.done {
                let report = fan
                    .as_ref()
                    .and_then(|fan| calls::finish_report(dag, run, step, fan, now));
                if let Some(r) = report {
                    finishing.insert((run_id.to_string(), step.clone()));
                    reports.push(r);
                }
            }
            let t = plan::advance(dag, run, &reports, now);
            for why in &t.ignored {
                warn!(run.id = %run_id, reason = %why, "report ignored");
            }
            Ok::<_, std::convert::Infallible>(t)
        })
        .await?;
    let mut orphans = Vec::new();
    let mut lost = 0;
    for (run_id, outcome) in outcomes {
        match outcome {
            CasOutcome::Applied { .. } => {
                // A finished call step's fan hash is of no more use.
                for (_, step) in finishing.range((run_id.clone(), String::new())..) {
                    if !finishing.contains(&(run_id.clone(), step.clone())) {
                        break;
                    }
                    store.fan_delete(&run_id, step).await?;
                }
            }
            CasOutcome::Declined(never) => match never {},
            CasOutcome::NotFound => {
                warn!(run.id = %run_id, "reports for a run that does not exist; dropping them");
                orphans.extend(by_run[&run_id].entry_ids.iter().cloned());
            }
            CasOutcome::MissingSpec(spec) => {
                error!(run.id = %run_id, spec = %spec, "the run's DAG version is missing; dropping its reports");
                orphans.extend(by_run[&run_id].entry_ids.iter().cloned());
            }
            CasOutcome::Lost => lost += 1,
        }
    }
    if !orphans.is_empty() {
        ack(store, &orphans).await?;
    }
    if lost > 0 {
        warn!(
            runs = lost,
            "runs kept changing under us; their reports stay pending"
        );
    }
    Ok(())
}

/// Acknowledges and deletes results-stream entries that can never apply, or that are done.
async fn ack(store: &Store, ids: &[String]) -> StoreResult<()> {
    Ok(store.ack_results(ids).await?)
}
