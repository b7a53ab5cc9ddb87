//! The cluster view: one [`ClusterSnapshot`] of Redis, the workers (from their heartbeats),
//! the ready streams, the named queues, the results stream and the cron scheduler, with a
//! status and the reasons for it. Served by `GET /health`.
//!
//! # Reads
//! A PING (bounded by [`PING_TIMEOUT`]; its round trip is the reported latency), then one
//! [`Store::cluster_view`] with [`Scope::HEALTH`] (two pipelines, listed in
//! [`crate::store::views`]), bounded by [`SNAPSHOT_TIMEOUT`]. So the cost is
//! O(workers + levels + queues + cron DAGs), whatever the number of runs or entries. The queues listed are the
//! configured ones, those with runs waiting and the paused ones (listing every DAG's own queue
//! would read every DAG); delayed runs are counted in total only (attributing them to queues
//! reads each run).
//!
//! # Status rules
//! * `down`: Redis does not answer PING within [`PING_TIMEOUT`], or the reads fail or take
//!   longer than [`SNAPSHOT_TIMEOUT`] (reason `redis_unreachable`). Nothing else is known then.
//! * `degraded`, with one reason per finding:
//!   - `no_live_worker`: steps are ready but no worker that is not draining has a live
//!     heartbeat;
//!   - `no_matching_worker`: steps of DAGs with a `workerSelector` are ready but no live worker
//!     (not draining) has the labels it asks for;
//!   - `worker_stalled`: a worker reports its claim loop stalled (free slots, no read of the
//!     ready streams for 10 s);
//!   - `worker_heartbeat_late`: a worker's last heartbeat is older than two of its intervals
//!     (its key lives three);
//!   - `redis_eviction`: `maxmemory-policy` is not `noeviction`, so Redis may drop queued work;
//!   - `redis_memory_high`: used memory is at least 90% of `maxmemory`;
//!   - `redis_persistence_failing`: the last RDB save or AOF write failed;
//!   - `results_lagging`: a step report has waited more than [`RESULTS_LAG_MS`] to be read,
//!     or to be applied once read, by a coordinator (the orchestrators are not progressing);
//!   - `draining`: this coordinator is shutting down.
//! * `ok` otherwise. Warnings (`redis_no_persistence`: neither AOF nor RDB save points;
//!   `no_worker`: no live worker, nothing ready) are listed without changing the status.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use dagrid_shared::labels::Labels;
use dagrid_shared::model::{now_ms, Heartbeat};
use serde::Serialize;

use crate::store::views::{Scope, SelectorState};
use crate::store::{Store, StoreResult};

/// How long the PING that opens a snapshot may take before Redis counts as unreachable.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a whole snapshot may take before Redis counts as unreachable.
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a step report may wait on the results stream (undelivered, or delivered and not
/// applied) before the view says `results_lagging` (ms).
pub(crate) const RESULTS_LAG_MS: u64 = 30_000;
/// Share of `maxmemory` from which the view says `redis_memory_high` (percent).
const MEMORY_HIGH_PERCENT: u64 = 90;

/// The cluster's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Nothing wrong was found.
    Ok,
    /// Work may be delayed or at risk; see the reasons.
    Degraded,
    /// Redis is unreachable: nothing can progress.
    Down,
}

/// One finding: a stable code and what it means here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Reason {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Reason {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Everything `GET /health` shows. Sections Redis could not provide are `null`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterSnapshot {
    pub(crate) status: Status,
    /// Why the status is not `ok` (empty when it is).
    pub(crate) reasons: Vec<Reason>,
    /// Findings that do not change the status.
    pub(crate) warnings: Vec<Reason>,
    /// This coordinator's dagrid version.
    pub(crate) version: &'static str,
    /// Seconds since this coordinator started serving.
    pub(crate) uptime_s: u64,
    /// Whether this coordinator is shutting down.
    pub(crate) draining: bool,
    /// When the snapshot was taken (ms since the epoch) and how long it took (ms).
    pub(crate) taken_at_ms: u64,
    pub(crate) took_ms: u64,
    pub(crate) redis: RedisHealth,
    pub(crate) workers: Option<WorkersHealth>,
    /// The ready streams, priority 9 down to 0.
    pub(crate) levels: Option<Vec<LevelHealth>>,
    /// The ready streams of each worker selector (DAG `workerSelector`), all levels together.
    pub(crate) selectors: Option<Vec<SelectorHealth>>,
    pub(crate) queues: Option<Vec<QueueHealth>>,
    pub(crate) delayed: Option<DelayedHealth>,
    pub(crate) results: Option<ResultsHealth>,
    pub(crate) scheduler: Option<SchedulerHealth>,
}

/// Redis as this coordinator sees it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct RedisHealth {
    pub(crate) reachable: bool,
    /// Why it is not reachable.
    pub(crate) error: Option<String>,
    /// Round trip of a PING (ms, fractional).
    pub(crate) ping_ms: Option<f64>,
    pub(crate) version: Option<String>,
    pub(crate) used_memory_bytes: Option<u64>,
    /// `maxmemory` (bytes; 0: no limit).
    pub(crate) maxmemory_bytes: Option<u64>,
    pub(crate) maxmemory_policy: Option<String>,
    /// Whether the append-only file is on.
    pub(crate) aof_enabled: Option<bool>,
    /// RDB save points (`CONFIG GET save`, e.g. `3600 1 300 100`; empty: none; null: the
    /// command is not allowed).
    pub(crate) rdb_save: Option<String>,
    /// `ok` or `err`, from INFO persistence.
    pub(crate) rdb_last_bgsave_status: Option<String>,
    pub(crate) aof_last_write_status: Option<String>,
}

/// The workers, from their heartbeats.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkersHealth {
    /// Workers whose heartbeat key has not expired.
    pub(crate) alive: u64,
    /// Members of the workers set whose heartbeat expired (dead, not pruned yet).
    pub(crate) expired: u64,
    pub(crate) slots_busy: u64,
    pub(crate) slots_total: u64,
    pub(crate) list: Vec<WorkerHealth>,
    /// The distinct label sets of the live workers (`dagrid worker --label`), each with its
    /// workers and slots, sorted by their canonical text (`gpu=true,region=eu`; the set of
    /// unlabelled workers, `{}`, first).
    pub(crate) label_sets: Vec<LabelSetHealth>,
}

/// The live workers that share one label set.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct LabelSetHealth {
    /// The labels (`{}`: workers without labels).
    #[schema(value_type = BTreeMap<String, String>, example = json!({"gpu": "true", "region": "eu"}))]
    pub(crate) labels: Labels,
    /// Its canonical text, `k1=v1,k2=v2` sorted by key (empty for no labels): the value of the
    /// `labels` label of `dagrid_workers_alive_by_labels` in `/metrics`.
    pub(crate) canonical: String,
    /// Live workers with exactly these labels.
    pub(crate) alive: u64,
    pub(crate) slots_busy: u64,
    pub(crate) slots_total: u64,
}

/// The live workers grouped by their label sets, sorted by canonical text (see
/// [`WorkersHealth::label_sets`]); `/health` and `/metrics` both render it.
pub(crate) fn label_sets(workers: &[Heartbeat]) -> Vec<LabelSetHealth> {
    let mut sets: BTreeMap<String, LabelSetHealth> = BTreeMap::new();
    for hb in workers {
        let canonical = hb.labels.canonical();
        let set = sets
            .entry(canonical.clone())
            .or_insert_with(|| LabelSetHealth {
                labels: hb.labels.clone(),
                canonical,
                alive: 0,
                slots_busy: 0,
                slots_total: 0,
            });
        set.alive += 1;
        set.slots_busy += u64::from(hb.slots_busy);
        set.slots_total += u64::from(hb.slots_total);
    }
    sets.into_values().collect()
}

/// One live worker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkerHealth {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) version: String,
    /// Its labels (`dagrid worker --label key=value`; `{}`: none).
    #[schema(value_type = BTreeMap<String, String>, example = json!({"gpu": "true"}))]
    pub(crate) labels: Labels,
    /// Age of its last heartbeat (ms).
    pub(crate) heartbeat_age_ms: u64,
    /// Its heartbeat interval (ms; 0: an older worker that does not say).
    pub(crate) heartbeat_interval_ms: u64,
    /// Age of its claim loop's last read attempt (ms; null: not reported).
    pub(crate) claim_age_ms: Option<u64>,
    pub(crate) cpu_percent: f32,
    pub(crate) memory_bytes: u64,
    pub(crate) slots_busy: u32,
    pub(crate) slots_total: u32,
    pub(crate) uptime_s: u64,
    pub(crate) stalled: bool,
    pub(crate) draining: bool,
    /// Its last heartbeat is older than two intervals.
    pub(crate) late: bool,
    /// Neither stalled nor late.
    pub(crate) healthy: bool,
}

/// One priority level's ready stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct LevelHealth {
    pub(crate) priority: u8,
    /// Entries no worker has read yet.
    pub(crate) ready: u64,
    /// Entries read by a worker and not finished (the group's pending entries).
    pub(crate) claimed: u64,
    /// Age of the oldest unread entry (ms), from its id.
    pub(crate) oldest_ready_ms: Option<u64>,
}

/// The ready streams of one worker selector.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct SelectorHealth {
    /// The labels a worker must have, canonical (`gpu=true,region=eu`).
    pub(crate) selector: String,
    /// Entries no worker has read yet.
    pub(crate) ready: u64,
    /// Entries read by a worker and not finished.
    pub(crate) claimed: u64,
    /// Age of the oldest unread entry (ms).
    pub(crate) oldest_ready_ms: Option<u64>,
    /// Live workers (not draining) whose labels satisfy it.
    pub(crate) matching_workers: u64,
    /// Why its ready steps wait (`no live worker matches gpu=true`); null when they do not.
    pub(crate) waiting_for: Option<String>,
}

/// The view of `s` at `now` (ms since the epoch).
pub(crate) fn selector_health(s: &SelectorState, now: u64) -> SelectorHealth {
    SelectorHealth {
        selector: s.selector.clone(),
        ready: s.ready,
        claimed: s.claimed,
        oldest_ready_ms: s.oldest_ready_at_ms.map(|ms| now.saturating_sub(ms)),
        matching_workers: s.matching_workers,
        waiting_for: s.waiting_for(),
    }
}

/// One named queue (admission lane).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueHealth {
    pub(crate) name: String,
    pub(crate) paused: bool,
    /// Configured `maxConcurrency` (null: not configured on this coordinator).
    pub(crate) max_concurrency: Option<u32>,
    /// Admitted runs not finished.
    pub(crate) active: u64,
    /// Runs waiting for capacity (or for the queue to resume).
    pub(crate) waiting: u64,
    /// How long the longest-waiting run has waited since it was submitted (ms).
    pub(crate) oldest_wait_ms: Option<u64>,
}

/// Runs submitted with a delay.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct DelayedHealth {
    pub(crate) count: u64,
    /// Time until the next one is due (ms; negative: overdue).
    pub(crate) next_due_in_ms: Option<i64>,
}

/// The results stream: the coordinators' progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ResultsHealth {
    /// Reports no coordinator has read yet.
    pub(crate) undelivered: u64,
    /// Reports read by a coordinator and not applied yet.
    pub(crate) pending: u64,
    /// Age of the oldest unread report (ms).
    pub(crate) oldest_undelivered_ms: Option<u64>,
    /// Age of the oldest read but unapplied report (ms).
    pub(crate) oldest_pending_ms: Option<u64>,
    /// Coordinators (consumers) in the group.
    pub(crate) consumers: u64,
}

/// The cron scheduler's state, from [`dagrid_shared::redis::keys::Keys::schedule_state`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct SchedulerHealth {
    /// Scheduled DAGs that fired at least once.
    pub(crate) dags_fired: u64,
    /// The DAG whose slot fired last, and that slot (ms since the epoch).
    pub(crate) last_fired_dag: Option<String>,
    pub(crate) last_fired_slot_ms: Option<u64>,
}

/// Takes a snapshot (see the module doc for the reads and the status rules). Never fails:
/// Redis errors make a `down` snapshot.
pub(crate) async fn snapshot(store: &Store, started: Instant, draining: bool) -> ClusterSnapshot {
    let begin = Instant::now();
    let mut snap = ClusterSnapshot {
        status: Status::Ok,
        reasons: Vec::new(),
        warnings: Vec::new(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: started.elapsed().as_secs(),
        draining,
        taken_at_ms: now_ms(),
        took_ms: 0,
        redis: RedisHealth::default(),
        workers: None,
        levels: None,
        selectors: None,
        queues: None,
        delayed: None,
        results: None,
        scheduler: None,
    };
    let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
    let outcome = match ping {
        Ok(Ok(())) => {
            snap.redis.ping_ms = Some(begin.elapsed().as_secs_f64() * 1000.0);
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, read(store, &mut snap)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "the reads took longer than {} ms",
                    SNAPSHOT_TIMEOUT.as_millis()
                )),
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to PING within {} ms",
            PING_TIMEOUT.as_millis()
        )),
    };
    if let Err(error) = outcome {
        snap.redis = RedisHealth {
            reachable: false,
            error: Some(error.clone()),
            ..Default::default()
        };
        snap.workers = None;
        snap.levels = None;
        snap.selectors = None;
        snap.queues = None;
        snap.delayed = None;
        snap.results = None;
        snap.scheduler = None;
        snap.reasons
            .push(Reason::new("redis_unreachable", format!("Redis: {error}")));
    } else {
        snap.redis.reachable = true;
    }
    judge(&mut snap);
    snap.took_ms = begin.elapsed().as_millis() as u64;
    snap
}

/// Fills `snap` from one [`Store::cluster_view`] read.
async fn read(store: &Store, snap: &mut ClusterSnapshot) -> StoreResult<()> {
    let v = store.cluster_view(Scope::HEALTH).await?;
    let now = v.now_ms;
    let info = &v.info;
    snap.redis.version = info.get("redis_version").cloned();
    snap.redis.used_memory_bytes = info.get("used_memory").and_then(|v| v.parse().ok());
    snap.redis.maxmemory_bytes = info.get("maxmemory").and_then(|v| v.parse().ok());
    snap.redis.maxmemory_policy = info.get("maxmemory_policy").cloned();
    snap.redis.aof_enabled = info.get("aof_enabled").map(|v| v == "1");
    snap.redis.rdb_save = v.rdb_save.clone();
    snap.redis.rdb_last_bgsave_status = info.get("rdb_last_bgsave_status").cloned();
    snap.redis.aof_last_write_status = info.get("aof_last_write_status").cloned();

    let mut workers = WorkersHealth {
        alive: 0,
        expired: v.workers_expired,
        slots_busy: 0,
        slots_total: 0,
        list: Vec::new(),
        label_sets: label_sets(&v.workers),
    };
    for hb in v.workers {
        let w = worker_health(hb, now);
        workers.alive += 1;
        workers.slots_busy += u64::from(w.slots_busy);
        workers.slots_total += u64::from(w.slots_total);
        workers.list.push(w);
    }
    snap.workers = Some(workers);
    let age = |at: Option<u64>| at.map(|ms| now.saturating_sub(ms));
    snap.levels = Some(
        v.levels
            .iter()
            .map(|l| LevelHealth {
                priority: l.priority,
                ready: l.ready,
                claimed: l.claimed,
                oldest_ready_ms: age(l.oldest_ready_at_ms),
            })
            .collect(),
    );
    snap.selectors = Some(
        v.selectors
            .iter()
            .map(|s| selector_health(s, now))
            .collect(),
    );
    snap.results = Some(ResultsHealth {
        undelivered: v.results.undelivered,
        pending: v.results.pending,
        oldest_undelivered_ms: age(v.results.oldest_undelivered_at_ms),
        oldest_pending_ms: age(v.results.oldest_pending_at_ms),
        consumers: v.results.consumers,
    });
    snap.queues = Some(
        v.queues
            .into_iter()
            .map(|q| QueueHealth {
                name: q.name,
                paused: q.paused,
                max_concurrency: q.configured,
                active: q.active,
                waiting: q.waiting,
                oldest_wait_ms: age(q.oldest_created_ms),
            })
            .collect(),
    );
    snap.delayed = Some(DelayedHealth {
        count: v.delayed,
        next_due_in_ms: v.next_due_ms.map(|due| due as i64 - now as i64),
    });
    let last = v.schedule.iter().max_by_key(|(_, slot)| **slot);
    snap.scheduler = Some(SchedulerHealth {
        dags_fired: v.schedule.len() as u64,
        last_fired_dag: last.map(|(dag, _)| dag.clone()),
        last_fired_slot_ms: last.map(|(_, slot)| *slot),
    });
    Ok(())
}

/// A live worker's view from its heartbeat.
fn worker_health(hb: Heartbeat, now: u64) -> WorkerHealth {
    let age = now.saturating_sub(hb.sent_ms);
    let late = hb.interval_ms > 0 && age > 2 * hb.interval_ms;
    WorkerHealth {
        heartbeat_age_ms: age,
        heartbeat_interval_ms: hb.interval_ms,
        claim_age_ms: (hb.claim_progress_ms > 0).then(|| now.saturating_sub(hb.claim_progress_ms)),
        cpu_percent: hb.cpu_percent,
        memory_bytes: hb.memory_bytes,
        slots_busy: hb.slots_busy,
        slots_total: hb.slots_total,
        uptime_s: now.saturating_sub(hb.started_ms) / 1000,
        stalled: hb.stalled,
        draining: hb.draining,
        late,
        healthy: !hb.stalled && !late,
        id: hb.worker_id,
        host: hb.host,
        pid: hb.pid,
        version: hb.version,
        labels: hb.labels,
    }
}

/// Applies the status rules of the module doc to `snap`'s readings.
fn judge(snap: &mut ClusterSnapshot) {
    if snap.draining {
        snap.reasons
            .push(Reason::new("draining", "this coordinator is shutting down"));
    }
    let redis = &snap.redis;
    if let Some(policy) = redis.maxmemory_policy.as_deref() {
        if policy != "noeviction" {
            snap.reasons.push(Reason::new(
                "redis_eviction",
                format!(
                    "maxmemory-policy is {policy}: Redis may evict queued work; set noeviction"
                ),
            ));
        }
    }
    if let (Some(used), Some(max)) = (redis.used_memory_bytes, redis.maxmemory_bytes) {
        if max > 0 && used * 100 >= max * MEMORY_HIGH_PERCENT {
            snap.reasons.push(Reason::new(
                "redis_memory_high",
                format!("Redis uses {used} of its maxmemory {max} bytes"),
            ));
        }
    }
    let failed = |s: &Option<String>| s.as_deref().is_some_and(|s| s != "ok");
    if failed(&redis.rdb_last_bgsave_status) || failed(&redis.aof_last_write_status) {
        snap.reasons.push(Reason::new(
            "redis_persistence_failing",
            "the last RDB save or AOF write of Redis failed (see its log)",
        ));
    }
    if redis.reachable && redis.aof_enabled == Some(false) && redis.rdb_save.as_deref() == Some("")
    {
        snap.warnings.push(Reason::new(
            "redis_no_persistence",
            "Redis has neither AOF nor RDB save points: a restart loses every run and queued step",
        ));
    }
    let ready: u64 = snap.levels.iter().flatten().map(|l| l.ready).sum();
    if let Some(workers) = &snap.workers {
        let serving = workers.list.iter().filter(|w| !w.draining).count();
        if serving == 0 {
            if ready > 0 {
                snap.reasons.push(Reason::new(
                    "no_live_worker",
                    format!("{ready} steps are ready but no worker is alive"),
                ));
            } else {
                snap.warnings
                    .push(Reason::new("no_worker", "no worker is alive"));
            }
        }
        for s in snap.selectors.iter().flatten() {
            if let Some(why) = &s.waiting_for {
                snap.reasons.push(Reason::new(
                    "no_matching_worker",
                    format!("{} steps are ready: {why}", s.ready),
                ));
            }
        }
        for w in &workers.list {
            if w.stalled {
                snap.reasons.push(Reason::new(
                    "worker_stalled",
                    format!(
                        "worker {}: its claim loop has free slots but has not read the ready streams for {} ms",
                        w.id,
                        w.claim_age_ms.unwrap_or(0)
                    ),
                ));
            }
            if w.late {
                snap.reasons.push(Reason::new(
                    "worker_heartbeat_late",
                    format!(
                        "worker {}: last heartbeat {} ms ago, interval {} ms",
                        w.id, w.heartbeat_age_ms, w.heartbeat_interval_ms
                    ),
                ));
            }
        }
    }
    if let Some(results) = &snap.results {
        let lag = results
            .oldest_undelivered_ms
            .max(results.oldest_pending_ms)
            .unwrap_or(0);
        if lag > RESULTS_LAG_MS {
            snap.reasons.push(Reason::new(
                "results_lagging",
                format!(
                    "a step report has waited {lag} ms to be applied by a coordinator ({} unread, {} read and unapplied)",
                    results.undelivered, results.pending
                ),
            ));
        }
    }
    snap.status = if !snap.redis.reachable {
        Status::Down
    } else if snap.reasons.is_empty() {
        Status::Ok
    } else {
        Status::Degraded
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> ClusterSnapshot {
        ClusterSnapshot {
            status: Status::Ok,
            reasons: Vec::new(),
            warnings: Vec::new(),
            version: "0",
            uptime_s: 0,
            draining: false,
            taken_at_ms: 0,
            took_ms: 0,
            redis: RedisHealth {
                reachable: true,
                maxmemory_policy: Some("noeviction".into()),
                aof_enabled: Some(true),
                ..Default::default()
            },
            workers: Some(WorkersHealth {
                alive: 0,
                expired: 0,
                slots_busy: 0,
                slots_total: 0,
                list: Vec::new(),
                label_sets: Vec::new(),
            }),
            levels: Some(vec![LevelHealth {
                priority: 5,
                ready: 0,
                claimed: 0,
                oldest_ready_ms: None,
            }]),
            selectors: Some(Vec::new()),
            queues: Some(Vec::new()),
            delayed: None,
            results: None,
            scheduler: None,
        }
    }

    fn codes(s: &ClusterSnapshot) -> Vec<&'static str> {
        s.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn status_rules() {
        let mut s = snap();
        judge(&mut s);
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.warnings[0].code, "no_worker");

        let mut s = snap();
        s.levels.as_mut().unwrap()[0].ready = 3;
        judge(&mut s);
        assert_eq!(
            (s.status, codes(&s)),
            (Status::Degraded, vec!["no_live_worker"])
        );

        let mut s = snap();
        s.redis.maxmemory_policy = Some("allkeys-lru".into());
        judge(&mut s);
        assert_eq!(codes(&s), vec!["redis_eviction"]);

        let mut s = snap();
        s.results = Some(ResultsHealth {
            undelivered: 1,
            pending: 0,
            oldest_undelivered_ms: Some(RESULTS_LAG_MS + 1),
            oldest_pending_ms: None,
            consumers: 1,
        });
        judge(&mut s);
        assert_eq!(codes(&s), vec!["results_lagging"]);

        let mut s = snap();
        s.redis = RedisHealth::default();
        s.reasons.push(Reason::new("redis_unreachable", "x"));
        judge(&mut s);
        assert_eq!(s.status, Status::Down);
    }

    #[test]
    fn a_stalled_or_late_worker_is_unhealthy() {
        let hb = Heartbeat {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            version: "v".into(),
            slots_total: 2,
            slots_busy: 0,
            cpu_percent: 0.0,
            memory_bytes: 0,
            started_ms: 0,
            sent_ms: 10_000,
            interval_ms: 1000,
            claim_progress_ms: 9_000,
            stalled: false,
            draining: false,
            named: true,
            labels: Default::default(),
        };
        let ok = worker_health(hb.clone(), 10_500);
        assert!(ok.healthy && !ok.late);
        assert_eq!(ok.claim_age_ms, Some(1500));
        assert!(worker_health(hb.clone(), 12_001).late);
        let stalled = worker_health(
            Heartbeat {
                stalled: true,
                ..hb
            },
            10_000,
        );
        assert!(!stalled.healthy);
        let mut s = snap();
        s.workers.as_mut().unwrap().list.push(stalled);
        judge(&mut s);
        assert_eq!(codes(&s), vec!["worker_stalled"]);
    }

    #[test]
    fn live_workers_are_grouped_by_label_set() {
        let hb = |labels: &str, busy: u32| Heartbeat {
            worker_id: format!("w-{labels}-{busy}"),
            host: "h".into(),
            pid: 1,
            version: "v".into(),
            slots_total: 4,
            slots_busy: busy,
            cpu_percent: 0.0,
            memory_bytes: 0,
            started_ms: 0,
            sent_ms: 0,
            interval_ms: 1000,
            claim_progress_ms: 0,
            stalled: false,
            draining: false,
            named: true,
            labels: Labels::parse_list(labels).unwrap(),
        };
        let workers = [
            hb("region=eu,gpu=true", 1),
            hb("", 0),
            hb("gpu=true,region=eu", 3),
        ];
        let sets = label_sets(&workers);
        let view: Vec<(&str, u64, u64, u64)> = sets
            .iter()
            .map(|s| (s.canonical.as_str(), s.alive, s.slots_busy, s.slots_total))
            .collect();
        assert_eq!(view, [("", 1, 0, 4), ("gpu=true,region=eu", 2, 4, 8)]);
        let json = serde_json::to_value(&sets).unwrap();
        assert_eq!(json[0]["labels"], serde_json::json!({}));
        assert_eq!(
            json[1]["labels"],
            serde_json::json!({"gpu": "true", "region": "eu"})
        );
        let one = serde_json::to_value(worker_health(workers[0].clone(), 0)).unwrap();
        assert_eq!(
            one["labels"],
            serde_json::json!({"gpu": "true", "region": "eu"})
        );
    }
}
