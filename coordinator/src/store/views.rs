//! One read of the cluster for every view of it: the ready streams, the delayed set, the
//! waiting and paused queues, the workers' heartbeats and the results backlog, in two
//! pipelined round trips (plus the DAG registry when a view lists every DAG's queue).
//! `/health` ([`crate::cluster`]), `/metrics` (`api::metrics`) and `/api/v1/queues`
//! (`api::queues`) each render a [`ClusterView`]; a [`Scope`] names the extra reads a view
//! needs, so the common ones are written and parsed once.
//!
//! # Reads
//! 1. `ZRANGE <workers> 0 -1`, per priority level `XLEN` + `XINFO GROUPS` of its ready stream,
//!    `ZCARD` + first member of the delayed set, `SMEMBERS` of the waiting-queues and paused
//!    sets, `XLEN` + `XINFO GROUPS` + `XPENDING` (summary) of the results stream; with
//!    [`Scope::health`] `INFO`, `CONFIG GET save` and `HGETALL` of the schedule state; with
//!    [`Scope::runs_by_status`] `ZCARD` of each runs-by-status index; with
//!    [`DagQueues::OwnWhenBusy`] `HKEYS` of the DAG registry; with [`Scope::queue_detail`] the
//!    first [`VIEW_DELAYED_MAX`] members of the delayed set.
//! 2. `MGET` of the listed workers' heartbeat keys, per stream `XRANGE <stream> (<last
//!    delivered id> + COUNT 1` (the oldest undelivered entry; entry ids are ms timestamps), per
//!    queue `SCARD` of its active set and `ZCARD` of its waiting set; with
//!    [`Scope::queue_ages`] the first member of each priority band of its waiting set; with
//!    [`Scope::queue_detail`] `ZCOUNT` of each band, and `HMGET` of the queue of each delayed
//!    run read in 1.
//!
//! Replies are read leniently: a missing stream or consumer group (Redis lost its data), or
//! any other error reply, reads as empty; only a failed connection fails the read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dagrid_shared::dag::Priority;
use dagrid_shared::model::{self, Heartbeat, RunStatus};
use dagrid_shared::redis::fields::{run_field, wait_score};
use dagrid_shared::redis::keys::{Keys, COORDINATOR_GROUP, WORKER_GROUP};
use redis::Value;

use super::{Store, StoreResult};

/// Most delayed runs the queue view attributes to their queues.
pub(crate) const VIEW_DELAYED_MAX: usize = 1000;

/// Which queues a view lists besides the configured ones, those with waiting runs and the
/// paused ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DagQueues {
    /// No others (listing every DAG's own queue would read every DAG).
    None,
    /// The queue named after each registered DAG (its own queue), listed only while it holds
    /// active or waiting runs.
    OwnWhenBusy,
    /// Each registered DAG's queue (its `queue:`, else its own), always listed; the DAGs are
    /// read, so a DAG's own queue gets its `maxActiveRuns` as its limit.
    All,
}

/// The reads a view needs beyond the common ones (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope {
    /// Redis' own state (`INFO`, `CONFIG GET save`) and the cron scheduler's state.
    pub(crate) health: bool,
    /// Runs per status.
    pub(crate) runs_by_status: bool,
    /// The queues listed.
    pub(crate) dag_queues: DagQueues,
    /// The creation time of each queue's longest-waiting run.
    pub(crate) queue_ages: bool,
    /// Waiting runs per priority level and delayed runs of each queue.
    pub(crate) queue_detail: bool,
}

impl Scope {
    /// What `/health` shows.
    pub(crate) const HEALTH: Scope = Scope {
        health: true,
        runs_by_status: false,
        dag_queues: DagQueues::None,
        queue_ages: true,
        queue_detail: false,
    };
    /// What `/metrics` shows.
    pub(crate) const METRICS: Scope = Scope {
        health: false,
        runs_by_status: true,
        dag_queues: DagQueues::OwnWhenBusy,
        queue_ages: false,
        queue_detail: false,
    };
    /// What `/api/v1/queues` shows.
    pub(crate) const QUEUES: Scope = Scope {
        health: false,
        runs_by_status: false,
        dag_queues: DagQueues::All,
        queue_ages: true,
        queue_detail: true,
    };
}

/// The cluster as one [`Store::cluster_view`] read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterView {
    /// When the replies were parsed (ms since the epoch); ages are relative to it.
    pub(crate) now_ms: u64,
    /// `INFO` as `field → value` ([`Scope::health`] only).
    pub(crate) info: BTreeMap<String, String>,
    /// RDB save points (`CONFIG GET save`; `None`: not read or not allowed).
    pub(crate) rdb_save: Option<String>,
    /// Scheduled DAG → its last fired slot (ms) ([`Scope::health`] only).
    pub(crate) schedule: HashMap<String, u64>,
    /// Runs per status, in [`RunStatus::ALL`] order ([`Scope::runs_by_status`] only).
    pub(crate) runs_by_status: Vec<(RunStatus, u64)>,
    /// Heartbeats of the live workers (their keys have not expired).
    pub(crate) workers: Vec<Heartbeat>,
    /// Members of the workers set whose heartbeat expired (dead, not pruned yet).
    pub(crate) workers_expired: u64,
    /// The ready streams, priority 9 down to 0 (each level's plain stream and its worker
    /// selectors' streams together).
    pub(crate) levels: Vec<LevelState>,
    /// The ready streams of each registered worker selector, all levels together, by selector
    /// (canonical text).
    pub(crate) selectors: Vec<SelectorState>,
    /// Members of the delayed set (delayed runs, step retries, run deadlines).
    pub(crate) delayed: u64,
    /// Due time of the earliest member of the delayed set (ms).
    pub(crate) next_due_ms: Option<u64>,
    /// The queues listed (see [`DagQueues`]), by name.
    pub(crate) queues: Vec<QueueState>,
    /// The results stream.
    pub(crate) results: ResultsState,
}

/// One priority level's ready stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct LevelState {
    pub(crate) priority: u8,
    /// Entries no worker has claimed yet (acknowledged entries are deleted, so the stream
    /// holds the claimed ones and the unclaimed ones).
    pub(crate) ready: u64,
    /// Entries claimed by a worker and not finished (the worker group's pending entries).
    pub(crate) claimed: u64,
    /// Time of the oldest unclaimed entry (ms since the epoch, from its id).
    pub(crate) oldest_ready_at_ms: Option<u64>,
}

/// The ready streams of one worker selector ([`dagrid_shared::Keys::ready_of`]), all levels.
#[derive(Debug, Clone, Default)]
pub(crate) struct SelectorState {
    /// The selector, canonical (`gpu=true,region=eu`).
    pub(crate) selector: String,
    /// Entries no worker has claimed yet.
    pub(crate) ready: u64,
    /// Entries claimed by a worker and not finished.
    pub(crate) claimed: u64,
    /// Time of the oldest unclaimed entry (ms since the epoch).
    pub(crate) oldest_ready_at_ms: Option<u64>,
    /// Live workers, not draining, whose labels satisfy the selector: while 0, its ready steps
    /// wait for one to join.
    pub(crate) matching_workers: u64,
}

impl SelectorState {
    /// Why its ready steps wait, when no live worker matches and some are ready:
    /// `no live worker matches gpu=true`.
    pub(crate) fn waiting_for(&self) -> Option<String> {
        (self.matching_workers == 0 && self.ready > 0)
            .then(|| format!("no live worker matches {}", self.selector))
    }
}

/// Live workers of `workers`, not draining, whose labels satisfy `selector` (canonical).
pub(crate) fn matching_workers(workers: &[Heartbeat], selector: &str) -> u64 {
    let Ok(selector) = dagrid_shared::labels::Labels::parse_list(selector) else {
        return 0;
    };
    workers
        .iter()
        .filter(|w| !w.draining && w.labels.satisfies(&selector))
        .count() as u64
}

/// One queue (admission lane).
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueState {
    pub(crate) name: String,
    pub(crate) paused: bool,
    /// `maxConcurrency` as configured on this coordinator (`--queue`).
    pub(crate) configured: Option<u32>,
    /// The limit this coordinator enforces: as configured, else (with [`DagQueues::All`]) the
    /// `maxActiveRuns` of the DAG the queue is named after; 0: none.
    pub(crate) limit: u32,
    /// Admitted runs not finished.
    pub(crate) active: u64,
    /// Runs waiting for capacity (or for the queue to resume).
    pub(crate) waiting: u64,
    /// Waiting runs per priority level, levels with none left out ([`Scope::queue_detail`]).
    pub(crate) waiting_by_priority: BTreeMap<u8, u64>,
    /// Delayed runs of this queue, among the first [`VIEW_DELAYED_MAX`] members of the delayed
    /// set ([`Scope::queue_detail`]).
    pub(crate) delayed: u64,
    /// Creation time of the longest-waiting run (ms since the epoch) ([`Scope::queue_ages`]).
    pub(crate) oldest_created_ms: Option<u64>,
}

/// The results stream: the coordinators' progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResultsState {
    /// Reports no coordinator has read yet.
    pub(crate) undelivered: u64,
    /// Reports read by a coordinator and not applied yet.
    pub(crate) pending: u64,
    /// Time of the oldest unread report (ms since the epoch).
    pub(crate) oldest_undelivered_at_ms: Option<u64>,
    /// Time of the oldest read but unapplied report (ms since the epoch).
    pub(crate) oldest_pending_at_ms: Option<u64>,
    /// Coordinators (consumers) in the group.
    pub(crate) consumers: u64,
}

impl Store {
    /// Reads the cluster (see the module doc for the reads of each [`Scope`]).
    ///
    /// # Errors
    /// [`super::StoreError::Unavailable`] when Redis cannot be reached or a pipeline fails as a
    /// whole; error replies of single commands read as empty.
    pub(crate) async fn cluster_view(&self, scope: Scope) -> StoreResult<ClusterView> {
        let keys = self.redis().keys();
        let levels: Vec<Priority> = Priority::levels_high_to_low().collect();
        let selectors = dagrid_shared::redis::conn::selectors(self.redis()).await?;
        // Every ready stream: per level, its plain stream then each selector's.
        let lanes: Vec<(Priority, Option<&str>)> = levels
            .iter()
            .flat_map(|p| {
                std::iter::once((*p, None)).chain(selectors.iter().map(|s| (*p, Some(s.as_str()))))
            })
            .collect();
        let dags = match scope.dag_queues {
            DagQueues::All => Some(self.dags().await?),
            _ => None,
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if scope.health {
            pipe.cmd("INFO");
            pipe.cmd("CONFIG").arg("GET").arg("save");
            pipe.cmd("HGETALL").arg(keys.schedule_state());
        }
        pipe.cmd("ZRANGE").arg(keys.workers()).arg(0).arg(-1);
        for (p, selector) in &lanes {
            let ready = keys.ready_of(p.get(), selector.unwrap_or(""));
            pipe.cmd("XLEN").arg(&ready);
            pipe.cmd("XINFO").arg("GROUPS").arg(&ready);
        }
        pipe.cmd("ZCARD").arg(keys.delayed());
        pipe.cmd("ZRANGE")
            .arg(keys.delayed())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        pipe.cmd("SMEMBERS").arg(keys.waiting_queues());
        pipe.cmd("SMEMBERS").arg(keys.paused());
        pipe.cmd("XLEN").arg(keys.results());
        pipe.cmd("XINFO").arg("GROUPS").arg(keys.results());
        pipe.cmd("XPENDING")
            .arg(keys.results())
            .arg(COORDINATOR_GROUP);
        if scope.runs_by_status {
            for s in RunStatus::ALL {
                pipe.cmd("ZCARD").arg(keys.runs_by_status(s.as_str()));
            }
        }
        if scope.dag_queues == DagQueues::OwnWhenBusy {
            pipe.cmd("HKEYS").arg(keys.dags());
        }
        if scope.queue_detail {
            pipe.cmd("ZRANGE")
                .arg(keys.delayed())
                .arg(0)
                .arg(VIEW_DELAYED_MAX - 1);
        }
        let mut c = self.redis().conn().await?;
        let first: Vec<Value> = pipe.query_async(&mut *c).await?;
        let mut r = first.into_iter();
        let mut next = || r.next().unwrap_or(Value::Nil);

        let mut view = ClusterView::default();
        if scope.health {
            view.info = parse_info(&text(&next()).unwrap_or_default());
            view.rdb_save = match next() {
                Value::Array(v) => v.get(1).and_then(text),
                Value::Map(v) => v.first().and_then(|(_, v)| text(v)),
                _ => None,
            };
            view.schedule = parse(next());
        }
        let workers: Vec<String> = parse(next());
        let mut level_groups = Vec::new();
        for (p, selector) in &lanes {
            let len = int(&next());
            let group = group_info(next(), WORKER_GROUP);
            level_groups.push((*p, *selector, len, group));
        }
        view.delayed = int(&next());
        let next_due: Vec<(String, f64)> = parse(next());
        view.next_due_ms = next_due.first().map(|(_, due)| *due as u64);
        let waiting_queues: Vec<String> = parse(next());
        let paused: BTreeSet<String> = parse(next());
        let results_len = int(&next());
        let results_group = group_info(next(), COORDINATOR_GROUP);
        let results_oldest_pending = match next() {
            // XPENDING summary: [count, smallest id, largest id, consumers]
            Value::Array(v) => v.get(1).and_then(text),
            _ => None,
        };
        if scope.runs_by_status {
            for s in RunStatus::ALL {
                view.runs_by_status.push((s, int(&next())));
            }
        }
        // Queues always listed, and those listed only while they hold runs.
        let mut always: BTreeSet<String> = self.queues.keys().cloned().collect();
        always.extend(waiting_queues);
        always.extend(paused.iter().cloned());
        let mut names = always.clone();
        if scope.dag_queues == DagQueues::OwnWhenBusy {
            names.extend(parse::<Vec<String>>(next()));
        }
        if let Some(dags) = &dags {
            for (_, dag) in dags.values() {
                let name = self.queue_of(dag).name;
                always.insert(name.clone());
                names.insert(name);
            }
        }
        let delayed_ids: Vec<String> = if scope.queue_detail {
            parse(next())
        } else {
            Vec::new()
        };

        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if !workers.is_empty() {
            let mut get = redis::cmd("MGET");
            for id in &workers {
                get.arg(keys.worker(id));
            }
            pipe.add_command(get);
        }
        for (p, selector, _, group) in &level_groups {
            pipe.cmd("XRANGE")
                .arg(keys.ready_of(p.get(), selector.unwrap_or("")))
                .arg(after(group.last_delivered.as_deref()))
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        pipe.cmd("XRANGE")
            .arg(keys.results())
            .arg(after(results_group.last_delivered.as_deref()))
            .arg("+")
            .arg("COUNT")
            .arg(1);
        for name in &names {
            pipe.cmd("SCARD").arg(keys.active(name));
            pipe.cmd("ZCARD").arg(keys.waiting(name));
            for p in &levels {
                if scope.queue_ages {
                    pipe.add_command(oldest_waiting_cmd(keys, name, *p));
                }
                if scope.queue_detail {
                    let (band, next) = wait_band(*p);
                    pipe.cmd("ZCOUNT")
                        .arg(keys.waiting(name))
                        .arg(band)
                        .arg(format!("({next}"));
                }
            }
        }
        for id in &delayed_ids {
            pipe.cmd("HMGET")
                .arg(keys.run(id))
                .arg(run_field::QUEUE)
                .arg(run_field::DAG);
        }
        let second: Vec<Value> = pipe.query_async(&mut *c).await?;
        drop(c);
        view.now_ms = model::now_ms();
        let mut r = second.into_iter();
        let mut next = || r.next().unwrap_or(Value::Nil);

        // Workers: a heartbeat key missing means the worker's heartbeat expired.
        let beats: Vec<Option<Vec<u8>>> = if workers.is_empty() {
            Vec::new()
        } else {
            parse(next())
        };
        for raw in beats {
            match raw.and_then(|b| model::decode::<Heartbeat>(&b).ok()) {
                Some(hb) => view.workers.push(hb),
                None => view.workers_expired += 1,
            }
        }
        let mut by_selector: BTreeMap<&str, SelectorState> = BTreeMap::new();
        for (p, selector, len, group) in level_groups {
            let ready = len.saturating_sub(group.pending);
            let oldest = first_entry_ms(&next());
            let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(s) = selector {
                let lane = by_selector.entry(s).or_insert_with(|| SelectorState {
                    selector: s.to_string(),
                    ..SelectorState::default()
                });
                lane.ready += ready;
                lane.claimed += group.pending;
                lane.oldest_ready_at_ms = min(lane.oldest_ready_at_ms, oldest);
            }
            match view.levels.last_mut() {
                Some(level) if level.priority == p.get() => {
                    level.ready += ready;
                    level.claimed += group.pending;
                    level.oldest_ready_at_ms = min(level.oldest_ready_at_ms, oldest);
                }
                _ => view.levels.push(LevelState {
                    priority: p.get(),
                    ready,
                    claimed: group.pending,
                    oldest_ready_at_ms: oldest,
                }),
            }
        }
        view.selectors = by_selector.into_values().collect();
        for s in &mut view.selectors {
            s.matching_workers = matching_workers(&view.workers, &s.selector);
        }
        view.results = ResultsState {
            undelivered: results_len.saturating_sub(results_group.pending),
            pending: results_group.pending,
            oldest_undelivered_at_ms: first_entry_ms(&next()),
            oldest_pending_at_ms: results_oldest_pending.as_deref().and_then(id_ms),
            consumers: results_group.consumers,
        };
        for name in names {
            let active = int(&next());
            let waiting = int(&next());
            let mut oldest: Option<u64> = None;
            let mut by_priority = BTreeMap::new();
            for p in &levels {
                if scope.queue_ages {
                    if let Some(created) = oldest_created_ms(&next()) {
                        oldest = Some(oldest.map_or(created, |o| o.min(created)));
                    }
                }
                if scope.queue_detail {
                    let count = int(&next());
                    if count > 0 {
                        by_priority.insert(p.get(), count);
                    }
                }
            }
            if !always.contains(&name) && active == 0 && waiting == 0 {
                continue;
            }
            let configured = self.queues.get(&name).copied();
            let limit = match &dags {
                Some(dags) => self.queue_limit_in(&name, dags),
                None => configured.unwrap_or(0),
            };
            view.queues.push(QueueState {
                paused: paused.contains(&name),
                configured,
                limit,
                active,
                waiting,
                waiting_by_priority: by_priority,
                delayed: 0,
                oldest_created_ms: oldest,
                name,
            });
        }
        let mut delayed_by_queue: BTreeMap<String, u64> = BTreeMap::new();
        for _ in &delayed_ids {
            let (q, d): (Option<String>, Option<String>) = parse(next());
            if let Some(q) = q.or(d) {
                *delayed_by_queue.entry(q).or_default() += 1;
            }
        }
        for q in &mut view.queues {
            q.delayed = delayed_by_queue.get(&q.name).copied().unwrap_or(0);
        }
        Ok(view)
    }
}

/// The scores of priority level `p`'s band in a waiting ZSET: `[band, next)`, where a
/// member's score is its [`wait_score`] (the band in the high bits, the run's creation ms in
/// the low 42).
fn wait_band(p: Priority) -> (f64, f64) {
    let band = wait_score(p, 0);
    (band, band + (1u64 << 42) as f64)
}

/// `ZRANGE <queue's waiting ZSET> <band> (<next band> BYSCORE LIMIT 0 1 WITHSCORES`: the
/// longest-waiting run of priority level `p` in `queue`; read its creation time with
/// [`oldest_created_ms`].
fn oldest_waiting_cmd(keys: &Keys, queue: &str, p: Priority) -> redis::Cmd {
    let (band, next) = wait_band(p);
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(keys.waiting(queue))
        .arg(band)
        .arg(format!("({next}"))
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .arg("WITHSCORES");
    cmd
}

/// The creation time (ms) of the run an [`oldest_waiting_cmd`] reply names, if any.
fn oldest_created_ms(reply: &Value) -> Option<u64> {
    let first: Vec<(String, f64)> = redis::from_redis_value(reply.clone()).ok()?;
    first
        .first()
        .map(|(_, score)| (*score as u64) & ((1u64 << 42) - 1))
}

/// A reply as `T`; an error reply or another shape reads as `T::default()`.
fn parse<T: redis::FromRedisValue + Default>(v: Value) -> T {
    redis::from_redis_value(v).unwrap_or_default()
}

/// What `XINFO GROUPS` says about one group of a stream.
#[derive(Debug, Default)]
struct GroupInfo {
    pending: u64,
    consumers: u64,
    last_delivered: Option<String>,
}

/// The group `name` in an `XINFO GROUPS` reply (default when the stream or group is missing).
fn group_info(reply: Value, name: &str) -> GroupInfo {
    let Value::Array(groups) = reply else {
        return GroupInfo::default();
    };
    for g in groups {
        let fields: Vec<(String, Value)> = match g {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, kv.get(1)?.clone())))
                .collect(),
            Value::Map(pairs) => pairs
                .into_iter()
                .filter_map(|(k, v)| Some((text(&k)?, v)))
                .collect(),
            _ => continue,
        };
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
        if get("name").and_then(text).as_deref() != Some(name) {
            continue;
        }
        return GroupInfo {
            pending: get("pending").map(int).unwrap_or(0),
            consumers: get("consumers").map(int).unwrap_or(0),
            last_delivered: get("last-delivered-id").and_then(text),
        };
    }
    GroupInfo::default()
}

/// The XRANGE start just after `id` (exclusive), or the stream's start.
fn after(id: Option<&str>) -> String {
    match id {
        Some(id) if id != "0-0" => format!("({id}"),
        _ => "-".into(),
    }
}

/// The ms part of the first entry id in an `XRANGE` reply.
fn first_entry_ms(reply: &Value) -> Option<u64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    match entries.first()? {
        Value::Array(entry) => id_ms(&text(entry.first()?)?),
        _ => None,
    }
}

/// The ms part of a stream entry id (`<ms>-<seq>`).
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(n) => (*n).max(0) as u64,
        other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// `INFO` text as `field → value`.
fn parse_info(info: &str) -> BTreeMap<String, String> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xinfo_groups_replies_are_read() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            b("name"),
            b("workers"),
            b("consumers"),
            Value::Int(2),
            b("pending"),
            Value::Int(3),
            b("last-delivered-id"),
            b("1700000000000-1"),
        ])]);
        let g = group_info(reply, "workers");
        assert_eq!((g.pending, g.consumers), (3, 2));
        assert_eq!(after(g.last_delivered.as_deref()), "(1700000000000-1");
        assert_eq!(after(Some("0-0")), "-");
        assert_eq!(group_info(Value::Nil, "workers").pending, 0);
    }
}
