//! The reaper: finds the steps of workers that died and has them run again elsewhere.
//!
//! A claimed step is a pending entry of its worker's consumer in the `workers` group of a
//! ready stream. A live worker keeps its entries fresh: on every heartbeat it runs `XCLAIM …
//! 0 <ids> JUSTID` to itself, which resets their idle time, so however long a step runs its
//! entry never idles past the lease while the worker lives (a 10-minute step is never taken
//! away from a live worker). The reaper, every [`SWEEP_EVERY`] on each coordinator replica:
//!
//! 1. lists the entries idle for at least the lease on each level (`XPENDING <ready> workers
//!    IDLE <lease> <start> + <COUNT>`, the first page of every level in one pipeline, then
//!    looped with an exclusive start id as its cursor on the levels that have more);
//! 2. keeps those whose owner's last heartbeat (its score in the workers ZSET) is older than
//!    the lease, or absent; and those idle for two leases whatever their owner: a live worker
//!    refreshes every entry it runs, so such an entry is one its worker never learnt it had
//!    claimed (the reply to its `XREADGROUP` was lost with the connection, say to a Redis
//!    restart) and nobody would ever run it;
//! 3. reads each entry's task (`XRANGE id id`) and, per entry, runs `reclaim.lua`, which checks
//!    both conditions again and, in one step, acknowledges and deletes the entry and adds a
//!    `lost` report for the attempt to the results stream. The orchestrator applies that report
//!    like any other: the step runs again as a new attempt with a new fencing token (see
//!    `plan::LOST_RETRIES` for the cap), so a late report of the old attempt never counts;
//! 4. every lease, deletes the consumers of dead workers that hold no pending entry
//!    (`XGROUP DELCONSUMER`) and their members of the workers ZSET.
//!
//! A dead worker's step thus runs again within lease + [`SWEEP_EVERY`] + one claim of its
//! death, whatever the step's length. Replicas can sweep at the same time: the script's checks
//! make only one of them reclaim an entry.
//!
//! After Redis restarts, every entry looks idle since before the restart and heartbeats are
//! stale until the workers reconnect; the reaper therefore waits until Redis has been up for a
//! lease (`INFO server`'s `uptime_in_seconds`) before it reclaims anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::keys::{REAPER_CONSUMER, WORKER_GROUP};
use dagrid_shared::model::{self, now_ms, ReportKind, StepReport, StepTask};
use dagrid_shared::{conn, scripts, ConnError};
use redis::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::Store;

/// How often each replica looks for dead workers' entries.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Entries listed per XPENDING call.
const PAGE: usize = 200;

/// Sweeps until `shutdown` is cancelled; `lease` is how long a worker may go without a
/// heartbeat (and its entries without a refresh) before its steps are taken back.
pub(crate) async fn run(store: Arc<Store>, lease: Duration, shutdown: CancellationToken) {
    let mut next_cleanup = tokio::time::Instant::now() + lease;
    loop {
        match sweep(&store, lease).await {
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

/// A stream entry as XRANGE returns it: its id and its fields.
type StreamEntry = (String, BTreeMap<String, Vec<u8>>);

/// One entry idle past the lease.
#[derive(Debug, Clone)]
struct Idle {
    level: String,
    id: String,
    owner: String,
    /// How long it has been idle (ms).
    idle_ms: u64,
}

/// One sweep over every level; returns the number of entries reclaimed.
pub(crate) async fn sweep(store: &Store, lease: Duration) -> Result<usize, ConnError> {
    let lease_ms = lease.as_millis() as u64;
    let keys = store.redis().keys();
    let idle = idle_entries(store, lease_ms).await?;
    if idle.is_empty() {
        return Ok(0);
    }
    if redis_uptime_ms(store).await? < lease_ms {
        debug!("Redis restarted less than a lease ago; not reclaiming yet");
        return Ok(0);
    }
    let owners: BTreeSet<String> = idle.iter().map(|e| e.owner.clone()).collect();
    let dead = dead_among(store, &owners, lease_ms).await?;
    let idle: Vec<Idle> = idle
        .into_iter()
        .filter(|e| dead.contains(&e.owner) || e.idle_ms >= 2 * lease_ms)
        .collect();
    if idle.is_empty() {
        return Ok(0);
    }
    let mut c = store.redis().conn().await?;
    let mut pipe = redis::pipe();
    for e in &idle {
        pipe.cmd("XRANGE").arg(&e.level).arg(&e.id).arg(&e.id);
    }
    let entries: Vec<Vec<StreamEntry>> = pipe.query_async(&mut *c).await?;
    drop(c);
    let mut pipe = redis::pipe();
    let mut calls = 0;
    for (e, found) in idle.iter().zip(entries) {
        let task = found
            .first()
            .and_then(|(_, fields)| fields.get("t"))
            .and_then(|raw| model::decode::<StepTask>(raw).ok());
        let Some(task) = task else {
            warn!(entry.id = %e.id, stream = %e.level, worker = %e.owner, "a dead worker's ready entry has no readable task; acknowledging it (the reconciler repairs its step)");
            dagrid_shared::conn::ack_and_delete(
                store.redis(),
                &e.level,
                WORKER_GROUP,
                std::slice::from_ref(&e.id),
            )
            .await?;
            continue;
        };
        let orphan = !dead.contains(&e.owner);
        let report = lost_report(&task, &e.owner, lease, orphan);
        let mut inv = scripts::RECLAIM.prepare_invoke();
        inv.key(&e.level)
            .key(keys.results())
            .key(keys.workers())
            .arg(WORKER_GROUP)
            .arg(&e.id)
            .arg(&e.owner)
            .arg(if orphan { 2 * lease_ms } else { lease_ms })
            .arg(model::encode(&report).map_err(crate::store::encoding)?)
            .arg(if orphan { 0 } else { lease_ms });
        pipe.invoke_script(&inv);
        calls += 1;
        info!(run.id = %task.run_id, step = %task.step, attempt = task.attempt, worker = %e.owner, "worker presumed dead; its step runs again");
    }
    if calls == 0 {
        return Ok(0);
    }
    let replies = store.script_pipeline(&pipe).await?;
    Ok(replies
        .iter()
        .filter(|r| matches!(r, Value::Int(1)))
        .count())
}

/// The report that the attempt of `task` was lost with worker `owner` (dead, or alive but
/// unaware of the claim: `orphan`).
fn lost_report(task: &StepTask, owner: &str, lease: Duration, orphan: bool) -> StepReport {
    let error = if orphan {
        format!(
            "worker {owner} held attempt {} without running it (not refreshed for over {}); it was taken back",
            task.attempt,
            humantime::format_duration(lease * 2)
        )
    } else {
        format!(
            "worker {owner} stopped sending heartbeats (none for over {}); attempt {} was taken back",
            humantime::format_duration(lease),
            task.attempt
        )
    };
    StepReport {
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
    }
}

/// How long Redis has been up (ms), from `INFO server`.
async fn redis_uptime_ms(store: &Store) -> Result<u64, ConnError> {
    let mut c = store.redis().conn().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut *c)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(u64::MAX, |s| s.saturating_mul(1000)))
}

/// `XPENDING <level> workers IDLE <lease_ms> <start> + PAGE`: one page of entries idle for at
/// least `lease_ms`.
fn idle_page(level: &str, lease_ms: u64, start: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(level)
        .arg(WORKER_GROUP)
        .arg("IDLE")
        .arg(lease_ms)
        .arg(start)
        .arg("+")
        .arg(PAGE);
    cmd
}

/// One XPENDING reply: id, owner, idle time (ms), deliveries.
type Pending = (String, String, u64, u64);

/// The entries of every ready stream idle for at least `lease_ms`, owned by workers: the first
/// page of every level in one pipeline, then further pages of the levels that have more.
async fn idle_entries(store: &Store, lease_ms: u64) -> Result<Vec<Idle>, ConnError> {
    let levels = store.redis().keys().ready_levels();
    let mut c = store.redis().conn().await?;
    let mut pipe = redis::pipe();
    for level in &levels {
        pipe.add_command(idle_page(level, lease_ms, "-"));
    }
    let pages: Vec<Vec<Pending>> = match pipe.query_async(&mut *c).await {
        Ok(pages) => pages,
        // A stream or its group is gone (Redis lost its data; the groups are being made
        // again): nothing is pending.
        Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for (level, mut page) in levels.iter().zip(pages) {
        loop {
            let full = page.len() == PAGE;
            let next = page.last().map(|(last, ..)| format!("({last}"));
            out.extend(
                page.into_iter()
                    .filter(|(_, owner, ..)| owner != REAPER_CONSUMER)
                    .map(|(id, owner, idle_ms, _)| Idle {
                        level: level.clone(),
                        id,
                        owner,
                        idle_ms,
                    }),
            );
            let (true, Some(start)) = (full, next) else {
                break;
            };
            page = idle_page(level, lease_ms, &start)
                .query_async(&mut *c)
                .await?;
        }
    }
    Ok(out)
}

/// The workers among `owners` whose last heartbeat is older than `lease_ms`, or absent.
async fn dead_among(
    store: &Store,
    owners: &BTreeSet<String>,
    lease_ms: u64,
) -> Result<BTreeSet<String>, ConnError> {
    let mut c = store.redis().conn().await?;
    let mut pipe = redis::pipe();
    for o in owners {
        pipe.cmd("ZSCORE")
            .arg(store.redis().keys().workers())
            .arg(o);
    }
    let seen: Vec<Option<f64>> = conn::query_pipeline(&mut c, &pipe).await?;
    let cutoff = now_ms().saturating_sub(lease_ms) as f64;
    Ok(owners
        .iter()
        .zip(seen)
        .filter(|(_, s)| s.is_none_or(|ms| ms < cutoff))
        .map(|(o, _)| o.clone())
        .collect())
}

/// Deletes, on every level, the consumers that hold no pending entry, have been idle for a
/// lease and whose worker sent no heartbeat within the lease; then drops workers-ZSET members
/// with no heartbeat for a lease whose heartbeat key has expired.
async fn remove_dead_consumers(store: &Store, lease: Duration) -> Result<(), ConnError> {
    let lease_ms = lease.as_millis() as u64;
    let keys = store.redis().keys();
    let mut c = store.redis().conn().await?;
    let mut candidates: Vec<(String, String)> = Vec::new();
    for level in keys.ready_levels() {
        let consumers: Vec<BTreeMap<String, Value>> = match redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&level)
            .arg(WORKER_GROUP)
            .query_async(&mut *c)
            .await
        {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") => continue,
            Err(e) => return Err(e.into()),
        };
        for info in consumers {
            let int = |k: &str| match info.get(k) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            let name = match info.get("name") {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            if int("pending") == 0 && int("idle") as u64 >= lease_ms {
                candidates.push((level.clone(), name));
            }
        }
    }
    let names: BTreeSet<String> = candidates.iter().map(|(_, n)| n.clone()).collect();
    drop(c);
    let dead = dead_among(store, &names, lease_ms).await?;
    let mut c = store.redis().conn().await?;
    let mut pipe = redis::pipe();
    for (level, name) in candidates.iter().filter(|(_, n)| dead.contains(n)) {
        pipe.cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(level)
            .arg(WORKER_GROUP)
            .arg(name)
            .ignore();
    }
    let cutoff = now_ms().saturating_sub(lease_ms);
    let stale: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.workers())
        .arg("-inf")
        .arg(format!("({cutoff}"))
        .arg("BYSCORE")
        .query_async(&mut *c)
        .await?;
    for w in &stale {
        // Only when its heartbeat key is gone too (the ZSET score can lag a reconnect).
        pipe.cmd("EXISTS").arg(keys.worker(w));
    }
    if candidates.iter().all(|(_, n)| !dead.contains(n)) && stale.is_empty() {
        return Ok(());
    }
    let replies: Vec<Value> = pipe.query_async(&mut *c).await?;
    let gone: Vec<&String> = stale
        .iter()
        .zip(&replies)
        .filter(|(_, v)| matches!(v, Value::Int(0)))
        .map(|(w, _)| w)
        .collect();
    if !gone.is_empty() {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(keys.workers());
        for w in &gone {
            zrem.arg(*w);
        }
        zrem.query_async::<()>(&mut *c).await?;
        debug!(workers = gone.len(), "forgot dead workers");
    }
    Ok(())
}
