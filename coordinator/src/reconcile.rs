//! The reconciler: a periodic sweep that finds runs whose recorded state disagrees with the
//! streams and the delayed set, and repairs them, so nothing stays queued or running forever.
//!
//! Every transition is one atomic script, so drift needs something outside them: Redis losing
//! writes (a failover to a replica that lagged, a restart without `appendfsync always`), a
//! hand-edited key, or a bug. Every [`SWEEP_EVERY`] each coordinator replica walks the runs
//! indexed `queued` and `running` ([`PAGE`] at a time) and checks:
//!
//! * an admitted run's `queued` or `running` step has its ready-stream entry (`e:<step>`; the
//!   entry is there whether unclaimed or pending for a worker);
//! * a `retrying` step has its retry in the delayed set;
//! * a run still waiting for admission (it holds its root tasks) is in its queue's waiting set
//!   or in the delayed set.
//!
//! A finding is acted on only when the next sweep sees it again with the run's version
//! unchanged and no report has been pending in the coordinators' group for a second or more,
//! so a report on its way (a worker's final report, written with the entry's acknowledgement,
//! and not yet applied) is never mistaken for drift. The repair goes through
//! the normal paths: a step is reported `lost` on the results stream with its current token, so
//! the orchestrator runs it again as a new attempt (or fails it once its retries are used up);
//! a run lost from admission is put back in the delayed set as due now, and the timer loop
//! admits it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::model::{now_ms, ReportKind, RunRecord, RunStatus, StepReport, StepStatus};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::drift::Probe;
use crate::store::{Store, StoreResult};

/// How often each replica sweeps, unless configured otherwise
/// ([`crate::Config::reconcile_interval`]).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Runs read per pipeline.
const PAGE: usize = 200;

/// Something found wrong, keyed so the next sweep can confirm it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Finding {
    /// A queued, running or retrying step whose entry or retry is gone: (run, step, token).
    Step(String, String, String),
    /// A run waiting for admission that is in no waiting set and not delayed.
    Unadmitted(String),
}

/// Sweeps every `every` until `shutdown` is cancelled.
pub(crate) async fn run(store: Arc<Store>, every: Duration, shutdown: CancellationToken) {
    let mut seen: BTreeMap<Finding, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match sweep(&store, &seen).await {
            Ok((found, repaired)) => {
                if repaired > 0 {
                    info!(repaired, "reconciler repaired runs whose state had drifted");
                }
                seen = found;
            }
            Err(e) => warn!(cause = %e, "reconciling runs failed; will retry"),
        }
    }
}

/// One sweep. `before` holds the previous sweep's findings with the run version each was seen
/// at; returns this sweep's findings and the number of repairs made.
async fn sweep(
    store: &Store,
    before: &BTreeMap<Finding, u64>,
) -> StoreResult<(BTreeMap<Finding, u64>, usize)> {
    let mut found = BTreeMap::new();
    let mut repaired = 0;
    // A report waiting in some coordinator's pending list may be the one that explains a
    // finding (a final report whose entry is already acknowledged): repair nothing until
    // every pending report has been applied.
    let reports_pending = store.reports_in_flight().await?;
    for status in [RunStatus::Queued, RunStatus::Running] {
        let mut after: Option<String> = None;
        loop {
            let ids = store.runs_after(status, after.as_deref(), PAGE).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let full = ids.len() == PAGE;
            let runs = store.runs(&ids).await?;
            let mut page_found = BTreeMap::new();
            check(store, &runs, &mut page_found).await?;
            for (finding, ver) in page_found {
                if !reports_pending && before.get(&finding) == Some(&ver) {
                    repair(store, &finding, &runs).await?;
                    repaired += 1;
                } else {
                    found.insert(finding, ver);
                }
            }
            if !full {
                break;
            }
            after = Some(last);
        }
    }
    Ok((found, repaired))
}

/// Adds the findings of `runs` to `found` (finding → run version).
async fn check(
    store: &Store,
    runs: &[Option<RunRecord>],
    found: &mut BTreeMap<Finding, u64>,
) -> StoreResult<()> {
    // What to look up, and the finding each stands for (`None`: a step with no entry at all).
    let mut probes = Vec::new();
    let mut findings = Vec::new();
    for run in runs.iter().flatten() {
        if run.status.is_final() {
            continue;
        }
        // Admission removes the reason; a run that still has one holds its root tasks.
        let admitted = run.reason.is_none();
        if !admitted {
            if run.status == RunStatus::Queued {
                probes.push(Probe::Held {
                    run: &run.id,
                    queue: &run.queue,
                });
                findings.push((Finding::Unadmitted(run.id.clone()), run.version));
            }
            continue;
        }
        // The DAG version, when its steps have selectors of their own (their entries are on
        // their own streams).
        let dag = store
            .spec(&run.spec)
            .await?
            .filter(|dag| dag.has_step_selectors());
        for (name, s) in &run.steps {
            let token = s.token.clone().unwrap_or_default();
            let finding = Finding::Step(run.id.clone(), name.clone(), token);
            match s.status {
                // A call step waiting for its children holds no ready entry.
                StepStatus::Running if s.children > 0 => {
                    probes.push(Probe::Fan {
                        run: &run.id,
                        step: name,
                        token: s.token.as_deref().unwrap_or_default(),
                    });
                    findings.push((finding, run.version));
                }
                StepStatus::Queued | StepStatus::Running => match run.entries.get(name) {
                    Some(entry) => {
                        probes.push(Probe::Entry {
                            priority: run.priority.get(),
                            selector: match &dag {
                                Some(dag) => dag.selector_of(name).into(),
                                None => run.selector.as_str().into(),
                            },
                            entry,
                        });
                        findings.push((finding, run.version));
                    }
                    None => {
                        found.insert(finding, run.version);
                    }
                },
                StepStatus::Retrying => {
                    probes.push(Probe::Retry {
                        run: &run.id,
                        step: name,
                    });
                    findings.push((finding, run.version));
                }
                _ => {}
            }
        }
    }
    let missing = store.missing(&probes).await?;
    for ((finding, ver), gone) in findings.into_iter().zip(missing) {
        if gone {
            found.insert(finding, ver);
        }
    }
    Ok(())
}

/// Repairs a confirmed finding through the normal paths (see the module doc).
async fn repair(store: &Store, finding: &Finding, runs: &[Option<RunRecord>]) -> StoreResult<()> {
    match finding {
        Finding::Step(run_id, step, token) => {
            let attempt = runs
                .iter()
                .flatten()
                .find(|r| &r.id == run_id)
                .and_then(|r| r.steps.get(step))
                .map_or(0, |s| s.attempt);
            warn!(run.id = %run_id, step = %step, attempt, "the step's ready entry or retry is gone and nobody holds it; reporting the attempt lost so it runs again");
            let report = StepReport {
                call: None,
                children: 0,
                run_id: run_id.clone(),
                step: step.clone(),
                attempt,
                token: token.clone(),
                worker: "reconciler".into(),
                kind: ReportKind::Lost,
                started_ms: 0,
                finished_ms: Some(now_ms()),
                exit_code: None,
                error: Some(
                    "the step's ready entry was gone with no worker holding it (found by the reconciler)"
                        .into(),
                ),
                output: None,
                log_path: None,
                output_matched: false,
                repeat: false,
                resolved: None,
            };
            store.add_report(&report).await?;
        }
        Finding::Unadmitted(run_id) => {
            warn!(run.id = %run_id, "the run waits for admission but is in no queue; admitting it again");
            // The timer loop's PROMOTE takes it from the delayed set to admission.
            store.readmit(run_id).await?;
        }
    }
    Ok(())
}
