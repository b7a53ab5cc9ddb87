//! The reaper: finds the steps of workers that died and has them run again elsewhere.
//!
//! A claimed step is a pending entry of its worker's consumer in the `workers` group of a
//! ready stream. A live worker keeps its entries fresh: on every heartbeat it runs `XCLAIM …
//! 0 <ids> JUSTID` to itself, which resets their idle time, so however long a step runs its
//! entry never idles past the lease while the worker lives (a 10-minute step is never taken
//! away from a live worker). The reaper, every [`SWEEP_EVERY`] on each coordinator replica:
//!
//! 1. lists the entries idle for at least [`FAST_IDLE`] (or the lease, if shorter) on each
//!    level (`XPENDING <ready> workers IDLE <ms> <start> + <COUNT>`, the first page of every
//!    level in one pipeline, then looped with an exclusive start id as its cursor on the levels
//!    that have more); a live worker's entries are younger, so this is all a sweep costs while
//!    every worker lives;
//! 2. reads their owners' last heartbeats (score in the workers ZSET, and the heartbeat key for
//!    the owner's interval) and keeps the entries of owners
//!    * whose heartbeat is older than the lease, or absent, for entries idle for the lease;
//!    * **dead at once**: with no connection to Redis left (no client named after the worker
//!      in `CLIENT LIST TYPE normal`, one call, made only when some owner qualifies) and no
//!      heartbeat for [`dead_after`] its interval (1.5 intervals, at least [`FAST_IDLE`]), for
//!      entries idle as long; a worker that is only silent (partitioned, paused) keeps its
//!      connections open from Redis's side and keeps the full lease;
//!    * and entries idle for two leases whatever their owner: a live worker refreshes every
//!      entry it runs, so such an entry is one its worker never learnt it had claimed (the
//!      reply to its `XREADGROUP` was lost with the connection, say to a Redis restart) and
//!      nobody would ever run it;
//! 3. reads each entry's task (`XRANGE id id`) and, per entry, runs `reclaim.lua`, which checks
//!    idle time and heartbeat again, then, in one step, acknowledges and deletes the entry and
//!    adds a `lost` report for the attempt to the results stream. The orchestrator applies that
//!    report like any other: the step runs again as a new attempt with a new fencing token (see
//!    `plan::LOST_RETRIES` for the cap), so a late report of the old attempt never counts;
//! 4. every lease, deletes the consumers of dead workers that hold no pending entry
//!    (`delete_consumer.lua`: `XGROUP DELCONSUMER` after checking again, in the same step, that
//!    the consumer holds nothing and its worker sent no heartbeat) and their members of the
//!    workers ZSET.
//!
//! A killed worker's step thus runs again about [`dead_after`] its heartbeat interval after its
//! last heartbeat, plus up to a [`SWEEP_EVERY`]; a silent one's within lease + [`SWEEP_EVERY`];
//! whatever the step's length. Where `CLIENT LIST` is refused (some managed services rename or
//! forbid it) the reaper warns once and uses the lease alone. Replicas can sweep at the same
//! time: the script's checks make only one of them reclaim an entry.
//!
//! A connection that drops and comes back does not make a worker dead: the worker makes a new
//! (named) connection at its next heartbeat and retries a heartbeat that failed on a dropped
//! connection at once, so its heartbeat never gets older than [`dead_after`] unless it cannot
//! reach Redis for that long. One that cannot (its connections were closed, not black-holed)
//! looks dead and its steps run again; it stops them itself at its next heartbeat, or when its
//! leases run out (see the worker's `lease` module): steps are at least once.
//!
//! After Redis restarts, every entry looks idle since before the restart and heartbeats are
//! stale until the workers reconnect; the reaper therefore waits until Redis has been up for a
//! lease (`INFO server`'s `uptime_in_seconds`) before it reclaims anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::model::{now_ms, ReportKind, StepReport, StepTask};
use dagrid_shared::redis::keys::worker_client_name;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::leases::{self, Consumer, Idle, Reclaim};
use crate::store::{Store, StoreResult};

/// How often each replica looks for dead workers' entries: often enough that a killed worker's
/// steps run again within 2 s of its death; a sweep that finds no entry idle for
/// [`FAST_IDLE`] costs one pipeline of one `XPENDING` per priority level.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// The least time without a heartbeat, and without a refresh of its entries, before a worker
/// with no connection to Redis left is dead (for workers with the default 1 s heartbeat
/// interval; longer intervals get 1.5 of theirs, see [`dead_after`]).
pub(crate) const FAST_IDLE: Duration = Duration::from_millis(1500);

/// Sweeps until `shutdown` is cancelled; `lease` is how long a worker may go without a
/// heartbeat (and its entries without a refresh) before its steps are taken back.
pub(crate) async fn run(store: Arc<Store>, lease: Duration, shutdown: CancellationToken) {
    let mut next_cleanup = tokio::time::Instant::now() + lease;
    let clients = Clients::default();
    loop {
        match sweep(&store, lease, &clients).await {
            Ok(0) => {}
            Ok(n) => info!(steps = n, "reclaimed the steps of dead workers"),
            Err(e) => warn!(cause = %e, "looking for dead workers' steps failed; will retry"),
        }
        if tokio::time::Instant::now() >= next_cleanup {
            if let Err(e) = remove_dead_consumers(&store, lease).await {
                warn!(cause = %e, "removing dead workers' consumers failed; will retry");
            }
            next_cleanup = tokio::time::Instant::now() + lease;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

/// Why an entry is taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Its owner sent no heartbeat for the lease, and it idled that long.
    Silent,
    /// Its owner has no connection to Redis and sent no heartbeat for this long (ms); the entry
    /// idled as long.
    Dead(u64),
    /// Idle for two leases: its owner, alive or not, does not know it holds it.
    Orphan,
}

/// What the reaper knows of an entry's owner.
#[derive(Debug, Clone, Copy)]
struct Owner {
    /// Since its last heartbeat (ms); `None`: none on record.
    silent_ms: Option<u64>,
    /// Its heartbeat interval (ms), from its heartbeat key; `None` once the key expired.
    interval_ms: Option<u64>,
    /// Its heartbeat says its connections carry its name (`Heartbeat::named`); without that,
    /// its name missing from `CLIENT LIST` proves nothing and only the lease tells its death.
    named: bool,
}

/// How long a worker whose heartbeat interval is `interval_ms` (unknown: its heartbeat key
/// expired, three intervals without one) must go without a heartbeat, with no connection
/// left, to be dead at once: 1.5 intervals, at least [`FAST_IDLE`].
pub(crate) fn dead_after(interval_ms: Option<u64>) -> u64 {
    let floor = FAST_IDLE.as_millis() as u64;
    interval_ms.map_or(floor, |i| (i.saturating_mul(3) / 2).max(floor))
}

/// The verdict on an entry idle for `idle_ms` whose owner is `owner`, given the lease; `None`:
/// keep it. `Dead` needs the owner to have no connection to Redis, which the caller checks.
fn verdict(idle_ms: u64, owner: Owner, lease_ms: u64) -> Option<Verdict> {
    let silent = owner.silent_ms.unwrap_or(u64::MAX);
    if idle_ms >= lease_ms && silent >= lease_ms {
        return Some(Verdict::Silent);
    }
    if idle_ms >= 2 * lease_ms {
        return Some(Verdict::Orphan);
    }
    if !owner.named {
        return None;
    }
    let after = dead_after(owner.interval_ms);
    (after < lease_ms && idle_ms >= after && silent >= after).then_some(Verdict::Dead(after))
}

/// The reaper's view of the clients connected to Redis (`CLIENT LIST`), or that it cannot
/// have one.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    /// Set once Redis refused `CLIENT LIST`: the lease alone tells deaths from then on.
    refused: AtomicBool,
}

impl Clients {
    /// The names of the connected normal clients ([`Store::clients`]); `None` when Redis
    /// refuses the command (warned once, never asked again) or the call fails (asked again
    /// next sweep).
    async fn names(&self, store: &Store) -> Option<BTreeSet<String>> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        match store.clients().await {
            Ok(leases::Clients::Names(names)) => Some(names),
            Ok(leases::Clients::Refused(cause)) => {
                self.refused.store(true, Ordering::Relaxed);
                warn!(%cause, "Redis refused CLIENT LIST: a killed worker's steps now run again only after the lease (--lease-timeout), not within seconds");
                None
            }
            Err(e) => {
                debug!(cause = %e, "CLIENT LIST failed; will retry");
                None
            }
        }
    }
}

/// One sweep over every level; returns the number of entries reclaimed.
pub(crate) async fn sweep(store: &Store, lease: Duration, clients: &Clients) -> StoreResult<usize> {
    let lease_ms = lease.as_millis() as u64;
    let least = (FAST_IDLE.as_millis() as u64).min(lease_ms);
    let idle = store.idle_entries(least).await?;
    if idle.is_empty() {
        return Ok(0);
    }
    if store.redis_uptime_ms().await? < lease_ms {
        debug!("Redis restarted less than a lease ago; not reclaiming yet");
        return Ok(0);
    }
    let names: BTreeSet<String> = idle.iter().map(|e| e.owner.clone()).collect();
    let owners = owners(store, &names).await?;
    let mut idle: Vec<(Idle, Verdict)> = idle
        .into_iter()
        .filter_map(|e| {
            let v = verdict(e.idle_ms, owners[&e.owner], lease_ms)?;
            Some((e, v))
        })
        .collect();
    if idle.iter().any(|(_, v)| matches!(v, Verdict::Dead(_))) {
        let connected = clients.names(store).await;
        idle.retain(|(e, v)| match (v, &connected) {
            (Verdict::Dead(_), None) => false,
            (Verdict::Dead(_), Some(names)) => !names.contains(&worker_client_name(&e.owner)),
            _ => true,
        });
    }
    if idle.is_empty() {
        return Ok(0);
    }
    let entries: Vec<&Idle> = idle.iter().map(|(e, _)| e).collect();
    let tasks = store.ready_tasks(&entries).await?;
    let mut reclaims = Vec::new();
    for ((e, verdict), task) in idle.iter().zip(tasks) {
        let Some(task) = task else {
            warn!(entry.id = %e.id, stream = %e.level, worker = %e.owner, "a dead worker's ready entry has no readable task; acknowledging it (the reconciler repairs its step)");
            store.drop_entry(e).await?;
            continue;
        };
        let report = lost_report(&task, &e.owner, lease, *verdict);
        // Least idle time, and how old the owner's heartbeat must be (0: any).
        let (least_idle_ms, silent_ms) = match *verdict {
            Verdict::Silent => (lease_ms, lease_ms),
            Verdict::Dead(after) => (after, after),
            Verdict::Orphan => (2 * lease_ms, 0),
        };
        info!(run.id = %task.run_id, step = %task.step, attempt = task.attempt, worker = %e.owner, verdict = ?verdict, "worker presumed dead; its step runs again");
        reclaims.push(Reclaim {
            entry: e,
            least_idle_ms,
            silent_ms,
            report,
        });
    }
    store.reclaim(&reclaims).await
}

/// The report that the attempt of `task` was taken back from worker `owner`, and why.
fn lost_report(task: &StepTask, owner: &str, lease: Duration, verdict: Verdict) -> StepReport {
    let error = match verdict {
        Verdict::Orphan => format!(
            "worker {owner} held attempt {} without running it (not refreshed for over {}); it was taken back",
            task.attempt,
            humantime::format_duration(lease * 2)
        ),
        Verdict::Silent => format!(
            "worker {owner} stopped sending heartbeats (none for over {}); attempt {} was taken back",
            humantime::format_duration(lease),
            task.attempt
        ),
        Verdict::Dead(after) => format!(
            "worker {owner} died (no connection to Redis left, no heartbeat for over {}); attempt {} was taken back",
            humantime::format_duration(Duration::from_millis(after)),
            task.attempt
        ),
    };
    StepReport {
        call: None,
        children: 0,
        run_id: task.run_id.clone(),
        step: task.step.clone(),
        attempt: task.attempt,
        token: task.token.clone(),
        worker: owner.to_string(),
        kind: ReportKind::Lost,
        started_ms: 0,
        finished_ms: Some(now_ms()),
        exit_code: None,
        error: Some(error),
        output: None,
        log_path: None,
        output_matched: false,
        repeat: false,
        resolved: None,
    }
}

/// What the reaper knows of each of `names` ([`Store::seen`]).
async fn owners(store: &Store, names: &BTreeSet<String>) -> StoreResult<BTreeMap<String, Owner>> {
    let now = now_ms();
    Ok(store
        .seen(names)
        .await?
        .into_iter()
        .map(|(o, seen)| {
            let interval_ms = seen
                .heartbeat
                .as_ref()
                .map(|h| h.interval_ms)
                .filter(|&ms| ms > 0);
            let owner = Owner {
                silent_ms: seen
                    .last_ms
                    .map(|ms| now.saturating_sub(ms.max(0.0) as u64)),
                interval_ms,
                named: seen.heartbeat.is_some_and(|h| h.named),
            };
            (o, owner)
        })
        .collect())
}

/// Deletes, on every level, the consumers that hold no pending entry, have been idle for a
/// lease and whose worker sent no heartbeat within the lease; then drops workers-ZSET members
/// with no heartbeat for a lease whose heartbeat key has expired.
async fn remove_dead_consumers(store: &Store, lease: Duration) -> StoreResult<()> {
    let lease_ms = lease.as_millis() as u64;
    let candidates: Vec<Consumer> = store
        .consumers()
        .await?
        .into_iter()
        .filter(|c| c.pending == 0 && c.idle_ms >= lease_ms)
        .collect();
    let names: BTreeSet<String> = candidates.iter().map(|c| c.name.clone()).collect();
    // The workers among them whose last heartbeat is older than the lease, or absent.
    let cutoff = now_ms().saturating_sub(lease_ms);
    let dead: BTreeSet<&String> = names
        .iter()
        .zip(store.last_heartbeats(&names).await?)
        .filter(|(_, s)| s.is_none_or(|ms| ms < cutoff as f64))
        .map(|(o, _)| o)
        .collect();
    let dead: Vec<&Consumer> = candidates
        .iter()
        .filter(|c| dead.contains(&c.name))
        .collect();
    store.remove_consumers(&dead, cutoff).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 10_000;

    fn owner(silent_ms: Option<u64>, interval_ms: Option<u64>) -> Owner {
        Owner {
            silent_ms,
            interval_ms,
            named: true,
        }
    }

    #[test]
    fn a_worker_whose_connections_are_unnamed_keeps_its_lease() {
        // Redis refused its CLIENT SETNAME (or it is older): its name is never in CLIENT
        // LIST, so a late heartbeat must not make it dead before the lease.
        let unnamed = Owner {
            named: false,
            ..owner(Some(2_000), Some(1000))
        };
        assert_eq!(verdict(2_000, unnamed, LEASE), None);
        assert_eq!(
            verdict(
                LEASE,
                Owner {
                    silent_ms: Some(LEASE),
                    ..unnamed
                },
                LEASE
            ),
            Some(Verdict::Silent)
        );
        assert_eq!(
            verdict(2_000, owner(Some(2_000), Some(1000)), LEASE),
            Some(Verdict::Dead(1500))
        );
    }

    #[test]
    fn a_worker_silent_past_the_lease_loses_its_entries_idle_as_long() {
        let o = owner(Some(LEASE), Some(1000));
        assert_eq!(verdict(LEASE, o, LEASE), Some(Verdict::Silent));
        assert_eq!(
            verdict(LEASE, owner(None, None), LEASE),
            Some(Verdict::Silent)
        );
        // A live worker's entry, not refreshed for two leases: one it does not know it holds.
        assert_eq!(
            verdict(2 * LEASE, owner(Some(100), Some(1000)), LEASE),
            Some(Verdict::Orphan)
        );
    }

    #[test]
    fn dead_at_once_needs_one_and_a_half_intervals_of_silence_and_idle() {
        assert_eq!(dead_after(Some(1000)), 1500);
        assert_eq!(dead_after(Some(500)), 1500, "at least FAST_IDLE");
        assert_eq!(dead_after(Some(4000)), 6000);
        assert_eq!(dead_after(None), 1500);
        let o = owner(Some(1600), Some(1000));
        assert_eq!(verdict(1500, o, LEASE), Some(Verdict::Dead(1500)));
        // Heartbeat too recent, or the entry refreshed too recently: kept.
        assert_eq!(verdict(1500, owner(Some(1400), Some(1000)), LEASE), None);
        assert_eq!(verdict(1400, o, LEASE), None);
        // A slow heartbeat interval gets 1.5 of its own.
        assert_eq!(verdict(5000, owner(Some(5000), Some(4000)), LEASE), None);
        // Never later than the lease would: then the lease decides.
        assert_eq!(
            verdict(1500, owner(Some(1600), Some(1000)), 1000),
            Some(Verdict::Silent)
        );
    }
}
