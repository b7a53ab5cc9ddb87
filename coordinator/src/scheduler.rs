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
//!
//! The loop wakes at the next fire time of any DAG, and at least every [`MAX_SLEEP`] to see
//! DAGs registered through other replicas; that keeps it well inside the
//! [`dagrid_shared::schedule::DUE_GRACE_MS`] within which a slot still fires.

use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::conn::ConnError;
use dagrid_shared::dag::{Dag, OverlapPolicy};
use dagrid_shared::keys::Keys;
use dagrid_shared::model::now_ms;
use dagrid_shared::schedule::{due_slots, next_fires, CronSchedule};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::{Dedup, NewRun, Outcome, Trigger};
use crate::store::Store;

/// Longest sleep between two passes.
pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(1000);
/// Most slots one DAG fires in one pass (the latest ones, after a long catch-up window).
const MAX_SLOTS_PER_PASS: usize = 100;
/// Shortest life of a fired-slot marker (ms); longer for DAGs with a longer catch-up window.
const FIRED_TTL_MS: u64 = 24 * 3600 * 1000;

/// The parsed schedules of a DAG, in the zone that applies to it.
pub(crate) fn schedules_of(dag: &Dag, default_tz: Option<&str>) -> Vec<CronSchedule> {
    let tz = dag.timezone.as_deref().or(default_tz);
    dag.schedule
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

/// The next `n` fire times of a DAG (ms), for listings.
pub(crate) fn next_fire_times(dag: &Dag, default_tz: Option<&str>, n: usize) -> Vec<u64> {
    next_fires(&schedules_of(dag, default_tz), now_ms(), n)
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
) -> Result<Option<u64>, ConnError> {
    let scheduled: Vec<(String, Arc<Dag>)> = store
        .dags()
        .await?
        .into_values()
        .filter(|(_, dag)| !dag.schedule.is_empty())
        .map(|(record, dag)| (record.digest, dag))
        .collect();
    if scheduled.is_empty() {
        return Ok(None);
    }
    let keys = store.redis().keys();
    let mut c = store.redis().conn().await?;
    let mut get = redis::cmd("HMGET");
    get.arg(keys.schedule_state());
    for (_, dag) in &scheduled {
        get.arg(&dag.name);
    }
    let last: Vec<Option<u64>> = get.query_async(&mut *c).await?;
    drop(c);
    let now = now_ms();
    let mut next: Option<u64> = None;
    let mut runs = Vec::new();
    let mut fired_upto = Vec::new();
    for ((digest, dag), last) in scheduled.iter().zip(last) {
        let schedules = schedules_of(dag, default_tz);
        let slots = due_slots(
            &schedules,
            last,
            now,
            dag.catchup_window_ms,
            MAX_SLOTS_PER_PASS,
        );
        if let Some(n) = dagrid_shared::schedule::next_fire(&schedules, now) {
            next = Some(next.map_or(n, |m| m.min(n)));
        }
        let Some(&latest) = slots.last() else {
            continue;
        };
        let params = match dag.bind_params(&Default::default()) {
            Ok(p) => p,
            Err(e) => {
                warn!(dag = %dag.name, cause = %e, "cannot bind default params; slot skipped");
                continue;
            }
        };
        let ttl = FIRED_TTL_MS.max(dag.catchup_window_ms.unwrap_or(0).saturating_mul(2));
        for slot in slots {
            runs.push(NewRun {
                dag: dag.clone(),
                digest: digest.clone(),
                params: params.clone(),
                priority: dag.priority.unwrap_or_default(),
                dedup: (dag.overlap == OverlapPolicy::Skip).then(|| Dedup {
                    key: overlap_key(keys, &dag.name),
                    window_ms: 0,
                }),
                due_ms: None,
                trigger: Trigger::Schedule,
                cron_slot: Some((slot, ttl)),
            });
        }
        fired_upto.push((dag.name.clone(), latest));
    }
    // A draining coordinator starts nothing new: the slots are left to the other replicas (or
    // to this one after a restart, within the DAG's catchupWindow).
    if runs.is_empty() || draining.is_cancelled() {
        return Ok(next);
    }
    let subs = store.submit(&runs, None).await?;
    for (run, sub) in runs.iter().zip(&subs) {
        let slot = run.cron_slot.map(|(s, _)| s).unwrap_or(0);
        match sub.outcome {
            Outcome::AlreadyFired => {}
            Outcome::Deduplicated => info!(
                dag = %run.dag.name, slot_ms = slot, running = %sub.id,
                "cron slot skipped: the previous scheduled run is still active (overlapPolicy skip)"
            ),
            _ => info!(dag = %run.dag.name, slot_ms = slot, run.id = %sub.id, "cron slot fired"),
        }
    }
    let mut c = store.redis().conn().await?;
    let mut pipe = redis::pipe();
    for (dag, slot) in fired_upto {
        pipe.hset(keys.schedule_state(), dag, slot).ignore();
    }
    pipe.query_async::<()>(&mut *c).await?;
    Ok(next)
}
