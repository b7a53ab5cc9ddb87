//! The cron scheduler: fires each DAG's `schedule:` slots (Dagu `schedule`, `catchupWindow`,
//! `overlapPolicy`), with any number of coordinator replicas running it at once.
//!
//! Every replica computes the due slots of every scheduled DAG from the registered DAGs and the
//! last fired slot kept in Redis ([`Keys::schedule_state`]), with
//! [`dagrid_shared::schedule::due_slots`]. Each slot is submitted through the same admission
//! path as any run ([`Store::submit`]) with a cron-slot key ([`Keys::fired`]) that the submit
//! script sets NX: whichever replica gets there first creates the run, the others get
//! "already fired", so each slot fires exactly once.
//!
//! - **Overlap** `skip` (the default): the scheduled run holds the DAG's schedule dedup key
//!   while it is queued or running, so a slot that comes round meanwhile creates nothing (the
//!   DAG's param dedup policy does not apply to scheduled runs). `all`: no such key.
//! - **Downtime**: slots missed while no coordinator ran are not fired, unless the DAG sets
//!   `catchupWindow`; then those within the window are, oldest first.
//! - **Time zones**: an expression's `CRON_TZ=`, else the DAG's `timezone:`, else the
//!   coordinator's default ([`crate::Config::timezone`]), else UTC.
//! - **Overlap** `latest`: the scheduled run holds the same key, and a slot that comes round
//!   meanwhile waits in [`Keys::schedule_pending`] (only the newest), fired once the previous
//!   scheduled run has ended; a previous run still `queued` is replaced (stopped as superseded).
//! - **One-off** `at` entries fire once, as a slot at that instant.
//! - **`skip_if_successful`**: a slot fires nothing when the DAG's latest run succeeded and
//!   was created (a scheduled one: fired) in `[previous slot, this slot)` (Dagu's rule); a
//!   `latest` slot waits (pending) while the DAG's newest run is queued or running, is tested
//!   once that run has ended, and is dropped when skipped.
//! - **`schedule.stop` / `schedule.restart`** slots stop the DAG's runs created before the
//!   slot (`aborted`; a failed run waiting for its automatic retry keeps `failed` and loses
//!   the retry); a restart then submits a new run, due `restart_wait_sec` later, with a
//!   restart fired-marker ([`Keys::fired_restart`]) so one run starts per slot. The latest
//!   slot acted on is kept in [`Keys::schedule_actions`].
//!
//! The loop wakes at the next fire time of any DAG, and at least every [`MAX_SLEEP`] to see
//! DAGs registered through other replicas; that keeps it well inside the
//! [`dagrid_shared::schedule::DUE_GRACE_MS`] within which a slot still fires.

use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::dag::{Dag, OverlapPolicy};
use dagrid_shared::model::{now_ms, RunStatus};
use dagrid_shared::redis::keys::Keys;
use dagrid_shared::schedule::{due_slots, next_fires, prev_fire, CronSchedule, DUE_GRACE_MS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::admission::{Dedup, NewRun, Outcome, Trigger};
use crate::store::schedules::{Action, SlotOp, Stoppable};
use crate::store::{Store, StoreError, StoreResult};

/// Longest sleep between two passes.
pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(1000);
/// Most slots one DAG fires in one pass (the latest ones, after a long catch-up window).
const MAX_SLOTS_PER_PASS: usize = 100;
/// Shortest life of a fired-slot marker (ms); longer for DAGs with a longer catch-up window.
const FIRED_TTL_MS: u64 = 24 * 3600 * 1000;

/// The parsed start schedules of a DAG, in the zone that applies to it.
pub(crate) fn schedules_of(dag: &Dag, default_tz: Option<&str>) -> Vec<CronSchedule> {
    parse_all(dag, &dag.schedule, default_tz)
}

/// `texts` parsed in the DAG's zone; an expression that does not parse is logged and left out.
fn parse_all(dag: &Dag, texts: &[String], default_tz: Option<&str>) -> Vec<CronSchedule> {
    let tz = dag.timezone.as_deref().or(default_tz);
    texts
        .iter()
        .filter_map(|text| match CronSchedule::parse(text, tz) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(dag = %dag.name, schedule = %text, cause = %e, "schedule ignored");
                None
            }
        })
        .collect()
}

/// The next `n` start times of a DAG (ms; cron slots and one-off `at` entries), for listings.
pub(crate) fn next_fire_times(dag: &Dag, default_tz: Option<&str>, n: usize) -> Vec<u64> {
    let now = now_ms();
    let mut times = next_fires(&schedules_of(dag, default_tz), now, n);
    times.extend(dag.run_policy.at_ms.iter().copied().filter(|t| *t > now));
    times.sort_unstable();
    times.dedup();
    times.truncate(n);
    times
}

/// True when the scheduler has something to do for `dag`: start slots, one-off entries, or
/// stop and restart slots.
fn is_scheduled(dag: &Dag) -> bool {
    let p = &dag.run_policy;
    !dag.schedule.is_empty() || !p.at_ms.is_empty() || !p.stop.is_empty() || !p.restart.is_empty()
}

/// The one-off `at` times of `dag` due now: after the last fired slot and within the grace
/// (or the catch-up window), as [`due_slots`] treats cron slots.
fn due_one_offs(dag: &Dag, last: Option<u64>, now: u64) -> Vec<u64> {
    let lookback = dag
        .catchup_window_ms
        .map_or(DUE_GRACE_MS, |w| w.max(DUE_GRACE_MS));
    let from = last.unwrap_or(0).max(now.saturating_sub(lookback));
    dag.run_policy
        .at_ms
        .iter()
        .copied()
        .filter(|t| *t > from && *t <= now)
        .collect()
}

/// The dedup key a scheduled run holds under `overlapPolicy: skip`.
pub(crate) fn overlap_key(keys: &Keys, dag: &str) -> String {
    keys.dedup(dag, "@schedule")
}

/// Runs until `shutdown` is cancelled; once it is (the coordinator drains), no slot fires, even
/// from a pass already under way.
pub(crate) async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    loop {
        let sleep = match pass(&store, store.timezone.as_deref(), &shutdown).await {
            Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now_ms())).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                warn!(cause = %e, "the scheduler pass failed; will retry");
                MAX_SLEEP
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Fires every due slot, unless `draining` is cancelled by the time the slots are computed;
/// returns the next fire time of any DAG.
async fn pass(
    store: &Store,
    default_tz: Option<&str>,
    draining: &CancellationToken,
) -> StoreResult<Option<u64>> {
    let scheduled: Vec<(String, Arc<Dag>)> = store
        .dags()
        .await?
        .into_values()
        .filter(|(_, dag)| is_scheduled(dag))
        .map(|(record, dag)| (record.digest, dag))
        .collect();
    if scheduled.is_empty() {
        return Ok(None);
    }
    let keys = store.keys();
    let names: Vec<&str> = scheduled.iter().map(|(_, dag)| dag.name.as_str()).collect();
    let marks = store.schedule_marks(&names).await?;
    let now = now_ms();
    let mut next: Option<u64> = None;
    let mut runs = Vec::new();
    // Per run: its slot was already pending (logged when it first had to wait).
    let mut was_pending = Vec::new();
    let mut fired_upto = Vec::new();
    // `overlapPolicy: latest` slots of `skip_if_successful` DAGs: `clear` for one skipped (it
    // settles the pending slot, that one or an older one, which must not fire later), `set`
    // for one that waits for the DAG's active run to end before it is tested.
    let mut pending_ops: Vec<(&str, SlotOp, u64)> = Vec::new();
    let mut actions = Vec::new();
    let mut soonest = |n: Option<u64>| {
        if let Some(n) = n {
            next = Some(next.map_or(n, |m: u64| m.min(n)));
        }
    };
    for ((digest, dag), marks) in scheduled.iter().zip(marks) {
        let last = marks.fired;
        let schedules = schedules_of(dag, default_tz);
        let policy = &dag.run_policy;
        soonest(dagrid_shared::schedule::next_fire(&schedules, now));
        soonest(policy.at_ms.iter().copied().find(|t| *t > now));
        for (action, texts, acted_upto) in [
            (Action::Stop, &policy.stop, marks.stopped),
            (Action::Restart, &policy.restart, marks.restarted),
        ] {
            let cron = parse_all(dag, texts, default_tz);
            soonest(dagrid_shared::schedule::next_fire(&cron, now));
            if let Some(&slot) = due_slots(&cron, acted_upto, now, None, 1).last() {
                actions.push((action, digest.clone(), dag.clone(), slot));
            }
        }
        let mut slots = due_slots(
            &schedules,
            last,
            now,
            dag.catchup_window_ms,
            MAX_SLOTS_PER_PASS,
        );
        slots.extend(due_one_offs(dag, last, now));
        slots.sort_unstable();
        slots.dedup();
        if let Some(&latest) = slots.last() {
            fired_upto.push((dag.name.clone(), latest));
        }
        let waiting = marks.pending;
        if dag.overlap == OverlapPolicy::Latest {
            // Only the newest slot counts; an older pending one is dropped.
            slots = slots.last().copied().max(waiting).into_iter().collect();
        }
        if policy.skip_if_successful && !slots.is_empty() {
            let mut kept = Vec::new();
            for slot in slots {
                match succeeded_since_previous_slot(store, dag, &schedules, slot).await? {
                    Some(true) => {
                        info!(
                            dag = %dag.name, slot_ms = slot,
                            "cron slot skipped: the DAG succeeded since the previous slot (skip_if_successful)"
                        );
                        if dag.overlap == OverlapPolicy::Latest {
                            pending_ops.push((&dag.name, SlotOp::Clear, slot));
                        }
                    }
                    // The newest run is still active: a `latest` slot waits, and is tested
                    // again once that run has ended (submitting it now could fire it the
                    // moment the run ends, untested).
                    None if dag.overlap == OverlapPolicy::Latest => {
                        pending_ops.push((&dag.name, SlotOp::Set, slot));
                    }
                    _ => kept.push(slot),
                }
            }
            slots = kept;
        }
        if slots.is_empty() {
            continue;
        }
        let params = match dag.bind_params(&Default::default()) {
            Ok(p) => p,
            Err(e) => {
                warn!(dag = %dag.name, cause = %e, "cannot bind default params; slot skipped");
                continue;
            }
        };
        for slot in slots {
            was_pending.push(Some(slot) == waiting);
            runs.push(NewRun {
                dag: dag.clone(),
                digest: digest.clone(),
                params: params.clone(),
                priority: dag.priority.unwrap_or_default(),
                dedup: (dag.overlap != OverlapPolicy::All).then(|| Dedup {
                    key: overlap_key(keys, &dag.name),
                    legacy: keys.dedup_legacy(&dag.name, "@schedule"),
                    window_ms: 0,
                }),
                due_ms: None,
                trigger: Trigger::Schedule,
                cron_slot: Some((slot, fired_ttl(dag))),
                restart: false,
                parent: None,
                queue: None,
            });
        }
    }
    // A draining coordinator starts nothing new: the slots are left to the other replicas (or
    // to this one after a restart, within the DAG's catchupWindow).
    if draining.is_cancelled() {
        return Ok(next);
    }
    store.pending_slots(&pending_ops).await?;
    if !runs.is_empty() {
        let mut subs = store.submit(&runs, None).await?;
        supersede_queued(store, &runs, &mut subs).await?;
        let mut settled: Vec<(&str, SlotOp, u64)> = Vec::new();
        for ((run, sub), was_pending) in runs.iter().zip(&subs).zip(&was_pending) {
            let slot = run.cron_slot.map(|(s, _)| s).unwrap_or(0);
            let latest = run.dag.overlap == OverlapPolicy::Latest;
            match sub.outcome {
                Outcome::AlreadyFired => {}
                Outcome::Deduplicated if latest && *was_pending => {}
                Outcome::Deduplicated if latest => info!(
                    dag = %run.dag.name, slot_ms = slot, running = %sub.id,
                    "cron slot pending: it fires once the previous scheduled run ends (overlapPolicy latest)"
                ),
                Outcome::Deduplicated => info!(
                    dag = %run.dag.name, slot_ms = slot, running = %sub.id,
                    "cron slot skipped: the previous scheduled run is still active (overlapPolicy skip)"
                ),
                _ => {
                    info!(dag = %run.dag.name, slot_ms = slot, run.id = %sub.id, "cron slot fired")
                }
            }
            if latest {
                let op = if sub.outcome == Outcome::Deduplicated {
                    SlotOp::Set
                } else {
                    SlotOp::Clear
                };
                settled.push((&run.dag.name, op, slot));
            }
        }
        store.pending_slots(&settled).await?;
    }
    store.record_fired(&fired_upto).await?;
    for (action, digest, dag, slot) in actions {
        act(store, action, &digest, &dag, slot).await?;
        store.record_action(action, &dag.name, slot).await?;
    }
    Ok(next)
}

/// `overlapPolicy: latest` keeps only the newest scheduled run waiting: a slot deduplicated
/// onto a scheduled run of an older slot that is still `queued` (delayed, or waiting for queue
/// capacity; none of its steps started) stops that run (`aborted`, "superseded") and is
/// submitted again in its place; `subs` gets the new outcome. A run that has started is left to
/// finish, and the slot waits ([`Keys::schedule_pending`]). Replicas racing on one slot create
/// one run: the slot's fired-marker decides.
async fn supersede_queued(
    store: &Store,
    runs: &[NewRun],
    subs: &mut [crate::store::admission::Submission],
) -> StoreResult<()> {
    for (run, sub) in runs.iter().zip(subs.iter_mut()) {
        if run.dag.overlap != OverlapPolicy::Latest || sub.outcome != Outcome::Deduplicated {
            continue;
        }
        let Some((slot, _)) = run.cron_slot else {
            continue;
        };
        let (status, held_slot) = store.status_and_slot(&sub.id).await?;
        let older = held_slot.is_some_and(|held| held < slot);
        if status != Some(RunStatus::Queued) || !older {
            continue;
        }
        let why = format!("superseded by the newer cron slot {slot} ms (overlapPolicy latest)");
        match crate::store::stop::stop_run(store, &sub.id, RunStatus::Aborted, |_| why.clone())
            .await
        {
            Ok(crate::store::stop::StopOutcome::Stopped) => {
                info!(dag = %run.dag.name, slot_ms = slot, run.id = %sub.id, "queued scheduled run superseded (overlapPolicy latest)");
            }
            Ok(crate::store::stop::StopOutcome::Finished(_)) | Err(StoreError::NotFound { .. }) => {
            }
            Err(e) => return Err(e),
        }
        if let Some(again) = store.submit(std::slice::from_ref(run), None).await?.pop() {
            *sub = again;
        }
    }
    Ok(())
}

/// How long a fired-marker of `dag` lives (ms): a day, or twice its catch-up window.
fn fired_ttl(dag: &Dag) -> u64 {
    FIRED_TTL_MS.max(dag.catchup_window_ms.unwrap_or(0).saturating_mul(2))
}

/// Dagu's `skip_if_successful` test for `slot`: the DAG's latest run (the newest in its runs
/// index) succeeded and its reference time, its cron slot for a scheduled run, else its
/// creation time, lies in `[previous fire time, slot)`. As in Dagu, the run of the previous
/// slot itself counts (its slot is the previous fire time). `None` while that run is still
/// queued or running (not decided yet).
async fn succeeded_since_previous_slot(
    store: &Store,
    dag: &Dag,
    schedules: &[CronSchedule],
    slot: u64,
) -> StoreResult<Option<bool>> {
    let Some(newest) = store.newest_run(&dag.name).await? else {
        return Ok(Some(false));
    };
    if matches!(newest.status, Some(RunStatus::Queued | RunStatus::Running)) {
        return Ok(None);
    }
    if newest.status != Some(RunStatus::Succeeded) {
        return Ok(Some(false));
    }
    let Some(at) = newest.slot_ms.or(newest.created_ms) else {
        return Ok(Some(false));
    };
    let prev = prev_fire(schedules, slot).unwrap_or(0);
    Ok(Some(prev <= at && at < slot))
}

/// Stops the DAG's queued and running runs created before `slot` (`schedule.stop`; a
/// `schedule.restart` too, which then submits a new run due `restart_wait_sec` later). Runs
/// created at or after the slot are left alone, so a replica acting late on the same slot never
/// stops the run another replica's restart started.
async fn act(
    store: &Store,
    action: Action,
    digest: &str,
    dag: &Arc<Dag>,
    slot: u64,
) -> StoreResult<()> {
    let Stoppable {
        ids,
        active,
        fields,
    } = store.stoppable_runs(&dag.name).await?;
    let what = match action {
        Action::Stop => "schedule.stop",
        Action::Restart => "schedule.restart",
    };
    let why = format!("stopped by the DAG's {what} slot");
    for (i, (id, (created, retry_at))) in ids.iter().zip(fields).enumerate() {
        if created.is_none_or(|t| t >= slot) || (i >= active && retry_at.is_none()) {
            continue;
        }
        match crate::store::stop::stop_run(store, id, RunStatus::Aborted, |_| why.clone()).await {
            Ok(crate::store::stop::StopOutcome::Stopped) => {
                info!(dag = %dag.name, slot_ms = slot, run.id = %id, "run stopped ({what})");
            }
            Ok(crate::store::stop::StopOutcome::Finished(_)) | Err(StoreError::NotFound { .. }) => {
            }
            Err(e) => return Err(e),
        }
    }
    if action == Action::Stop {
        return Ok(());
    }
    let params = match dag.bind_params(&Default::default()) {
        Ok(p) => p,
        Err(e) => {
            warn!(dag = %dag.name, cause = %e, "cannot bind default params; restart skipped");
            return Ok(());
        }
    };
    let wait = dag.run_policy.restart_wait_ms.unwrap_or(0);
    let run = NewRun {
        dag: dag.clone(),
        digest: digest.to_string(),
        params,
        priority: dag.priority.unwrap_or_default(),
        // Dagu restarts unconditionally: a stopped run still running its handlers must not
        // hold the new one back.
        dedup: None,
        due_ms: (wait > 0).then(|| now_ms().saturating_add(wait)),
        trigger: Trigger::Schedule,
        cron_slot: Some((slot, fired_ttl(dag))),
        restart: true,
        parent: None,
        queue: None,
    };
    if let Some(sub) = store.submit(&[run], None).await?.first() {
        if sub.outcome != Outcome::AlreadyFired {
            info!(dag = %dag.name, slot_ms = slot, run.id = %sub.id, "run restarted (schedule.restart)");
        }
    }
    Ok(())
}
