//! Admission: how a run gets from submit to the ready streams, through dedup, delays, queues
//! and concurrency limits. Every path that creates a run (API, CLI, batch, schedule, retry)
//! goes through [`Store::submit`], so the limits hold on all of them.
//!
//! - **Dedup.** A run may hold a dedup key ([`Keys::dedup`]): the DAG name plus the canonical
//!   bound params ([`dedup_key`]), or the caller's explicit key. While the key is held, a
//!   submit with the same key returns the holder instead of creating a run. The key is released
//!   when the run finishes, or kept for the DAG's dedup window after a success.
//! - **Delays.** A run due later is stored with its root-step tasks held in its hash and its due
//!   time in the delayed ZSET ([`Keys::delayed`]); [`Store::promote_due`] (`store::timers`) moves it on once due.
//! - **Queues.** Each run goes through one queue: its DAG's `queue:`, else a queue named after
//!   the DAG (as in Dagu). It is admitted at once when the queue is not paused, nobody waits in
//!   it, and neither the queue's `maxConcurrency` nor the DAG's `maxActiveRuns` is reached;
//!   otherwise it waits, `queued` with a reason, in the queue's waiting ZSET ordered by priority
//!   then submit time. [`Store::admit_waiting`] admits waiting runs as capacity frees up.
//!
//! Each of these transitions is one Lua script (`submit`, `promote`, `admit`), so concurrent
//! coordinators never double-admit, and 100 identical submits to two coordinators at once
//! create one run.

use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::{maybe_done, BoxFuture, FutureExt, MaybeDone};

use dagrid_shared::dag::{BoundParam, Dag, DedupPolicy, Priority};
use dagrid_shared::model::{self, DagRecord, RunStatus};
use dagrid_shared::redis::conn::{script_pipeline_on, ConnError};
use dagrid_shared::redis::fields::{run_field, wait_score};
use dagrid_shared::redis::keys::Keys;
use dagrid_shared::redis::scripts;
use redis::Value;
use sha2::{Digest, Sha256};

use super::{encoding, Store};
use crate::plan;

/// Most runs one SUBMIT call creates (a chunk of consecutive runs sharing DAG version, queue,
/// priority and trigger).
const SUBMIT_CHUNK: usize = 200;
/// Most runs sent to Redis in one pipeline of SUBMIT calls (after the first, which is one
/// chunk).
const SUBMIT_PIPELINE: usize = 1_000;

/// A pipeline of SUBMIT calls sent to Redis: its replies once they came.
type Sent = Pin<Box<MaybeDone<BoxFuture<'static, Result<Vec<Value>, ConnError>>>>>;
/// The run ids a SUBMIT call gave its chunk's runs, and their queue.
type ChunkIds = (Vec<String>, String);
/// Waiting runs considered per ADMIT call.
const ADMIT_BATCH: usize = 64;
/// Of a queue with a limit, the waiting runs considered per ADMIT call beyond the limit: runs
/// held back by their DAG's `maxActiveRuns` are passed over, so a few more than can fit.
const ADMIT_SLACK: usize = 8;
/// Most waiting runs one admission pass passes over (held back by their DAG's
/// `maxActiveRuns`) to reach admissible ones behind them.
const ADMIT_PASS_OVER: usize = 4096;

/// What created a run (kept in the run hash as `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// `POST /api/v1/runs` (the CLI's `submit`).
    Api,
    /// `POST /api/v1/runs/batch` (the CLI's `batch`).
    Batch,
    /// A cron slot.
    Schedule,
    /// A call step of a parent run (Dagu `call:`).
    Call,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Batch => "batch",
            Trigger::Schedule => "schedule",
            Trigger::Call => "call",
        }
    }
}

/// A dedup key a new run is to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dedup {
    /// The full Redis key ([`Keys::dedup`]).
    pub(crate) key: String,
    /// The same key under its name before this version ([`Keys::dedup_legacy`]), which runs
    /// queued by earlier versions hold: a submit finding a holder there deduplicates onto it.
    pub(crate) legacy: String,
    /// How long the key outlives a successful finish (ms; 0: released at once).
    pub(crate) window_ms: u64,
}

/// A run to create.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub(crate) dag: Arc<Dag>,
    pub(crate) digest: String,
    pub(crate) params: Vec<BoundParam>,
    pub(crate) priority: Priority,
    pub(crate) dedup: Option<Dedup>,
    /// When the run is due (ms); `None` or a past time: now.
    pub(crate) due_ms: Option<u64>,
    pub(crate) trigger: Trigger,
    /// For a cron slot: the slot time (ms) and how long its fired-marker lives (ms).
    pub(crate) cron_slot: Option<(u64, u64)>,
    /// The cron slot is a `schedule.restart` slot: its fired-marker is
    /// [`Keys::fired_restart`] instead of [`Keys::fired`].
    pub(crate) restart: bool,
    /// For a child run of a call step: its parent (run hash fields `pr`, `ps`, `pd`; the run
    /// is added to the parent's [`Keys::children`] in the same script).
    pub(crate) parent: Option<dagrid_shared::model::ParentLink>,
    /// The queue to go through instead of its DAG's ([`Store::queue_of`]): a `parallel`
    /// step's own queue.
    pub(crate) queue: Option<QueueOf>,
}

/// What submitting one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Created and its first steps queued.
    Admitted,
    /// Created; waits for capacity in its queue (or for the queue to resume).
    Waiting,
    /// Created; waits for its due time.
    Delayed,
    /// Not created: the returned run holds the same dedup key.
    Deduplicated,
    /// Not created: this cron slot already fired (the returned id is its run, or empty).
    AlreadyFired,
    /// Not created now: an earlier request with the same `Idempotency-Key` created this run
    /// for this item.
    Replayed,
    /// Not created now: an earlier request with the same `Idempotency-Key` deduplicated this
    /// item onto this run.
    ReplayedDeduplicated,
    /// Not created: the `Idempotency-Key` was used with another request body (nothing of this
    /// request was written).
    KeyReused,
}

impl Outcome {
    /// True when no run was created for the item, now or by an earlier request with the same
    /// `Idempotency-Key`: the returned id is another run's.
    pub(crate) fn deduplicated(self) -> bool {
        matches!(self, Outcome::Deduplicated | Outcome::ReplayedDeduplicated)
    }
}

/// The `Idempotency-Key` of a submit request, as the submit script records it.
#[derive(Debug, Clone)]
pub(crate) struct Idempotency {
    /// The record's Redis key ([`Keys::idempotency`]).
    pub(crate) key: String,
    /// Digest of the request body: a key reused with another body is refused.
    pub(crate) digest: String,
}

/// How long an `Idempotency-Key` is remembered after its first use (ms): a day.
pub(crate) const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;

/// One submitted run: its id (or the id of the run it was deduplicated to), the outcome and,
/// for a run that waits, why.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub(crate) id: String,
    pub(crate) outcome: Outcome,
    pub(crate) reason: Option<String>,
}

/// The dedup key of a run of `dag` with `params` under `policy`, or `None` when the policy is
/// `none`. An explicit key replaces the params. The computed key is `p:` plus 32 hex digits of
/// the SHA-256 of the bound params (declared order, defaults included, so the order the caller
/// gave them in does not matter).
pub(crate) fn dedup_key(
    keys: &Keys,
    dag: &str,
    params: &[BoundParam],
    policy: DedupPolicy,
    explicit: Option<&str>,
) -> Option<Dedup> {
    let window_ms = match policy {
        DedupPolicy::None => return None,
        DedupPolicy::Active => 0,
        DedupPolicy::Window(ms) => ms,
    };
    let suffix = match explicit {
        Some(k) => format!("k:{k}"),
        None => {
            let mut h = Sha256::new();
            for p in params {
                h.update(p.name.as_deref().unwrap_or("").as_bytes());
                h.update([0]);
                h.update(p.value.as_bytes());
                h.update([0]);
            }
            let mut hex = hex::encode(h.finalize());
            hex.truncate(32);
            format!("p:{hex}")
        }
    };
    Some(Dedup {
        key: keys.dedup(dag, &suffix),
        legacy: keys.dedup_legacy(dag, &suffix),
        window_ms,
    })
}

/// The queue a DAG's runs go through and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueOf {
    /// The DAG's `queue:`, else its name.
    pub(crate) name: String,
    /// The queue's `maxConcurrency` (0: none).
    pub(crate) limit: u32,
    /// The DAG's `maxActiveRuns` when it applies apart from the queue (0: none).
    pub(crate) dag_limit: u32,
}

impl Store {
    /// The queue of `dag` under this coordinator's configuration.
    pub(crate) fn queue_of(&self, dag: &Dag) -> QueueOf {
        match &dag.queue {
            Some(q) => QueueOf {
                name: q.clone(),
                limit: self.queues.get(q).copied().unwrap_or(0),
                dag_limit: dag.max_active_runs.unwrap_or(0),
            },
            None => QueueOf {
                name: dag.name.clone(),
                limit: self
                    .queues
                    .get(&dag.name)
                    .copied()
                    .unwrap_or_else(|| own_queue_limit(dag)),
                dag_limit: 0,
            },
        }
    }

    /// The `maxConcurrency` of a queue: configured, else (for a DAG's own queue) the DAG's
    /// current `maxActiveRuns`, else none (0). Reads the DAG registry; see
    /// [`Store::queue_limit_in`] when the DAGs are at hand.
    pub(super) async fn queue_limit(&self, queue: &str) -> Result<u32, ConnError> {
        if let Some(n) = self.queues.get(queue) {
            return Ok(*n);
        }
        if let Some(n) = parallel_queue_limit(queue) {
            return Ok(n);
        }
        Ok(self
            .dag(queue)
            .await?
            .map_or(0, |(_, dag)| own_queue_limit(&dag)))
    }

    /// [`Store::queue_limit`] with the registered DAGs already read.
    pub(crate) fn queue_limit_in(
        &self,
        queue: &str,
        dags: &BTreeMap<String, (DagRecord, Arc<Dag>)>,
    ) -> u32 {
        match self.queues.get(queue) {
            Some(n) => *n,
            None => parallel_queue_limit(queue)
                .unwrap_or_else(|| dags.get(queue).map_or(0, |(_, dag)| own_queue_limit(dag))),
        }
    }

    /// Creates runs: one SUBMIT script per chunk of up to [`SUBMIT_CHUNK`] consecutive runs
    /// that share DAG version, queue, priority and trigger, pipelined (the first pipeline one
    /// chunk, so Redis starts at once, then [`SUBMIT_PIPELINE`] runs at a time), so a batch
    /// costs a round trip per pipeline and Redis runs one script per chunk. Runs are created
    /// in order, as if submitted one by one. Returns one [`Submission`] per run, in order;
    /// then admits waiting runs of the queues where some had to wait.
    ///
    /// Under an `Idempotency-Key` (`idem`), each script also records each item (by its index in
    /// `runs`) with the run it creates, and an item recorded before is answered from the record
    /// ([`Outcome::Replayed`]) instead of creating a run. A key used with another body answers
    /// [`Outcome::KeyReused`] for every item, and nothing is written; the submit stops at the
    /// first pipeline that says so.
    ///
    /// Pipelines go two at a time: the next one is built and sent while Redis runs the one
    /// before, so Redis does not wait for the coordinator between them. When there is more
    /// than one, they go on a connection of this submit's own ([`Redis::own_conn`]), each put
    /// in its queue by its first poll, which tokio's cooperative budget may not defer
    /// (`unconstrained`): with nothing else in that queue, they reach Redis, and run, in the
    /// order they were built. Dropping the future drops the pipelines in flight (what Redis
    /// received still runs, as when a client goes away).
    ///
    /// [`Redis::own_conn`]: dagrid_shared::redis::conn::Redis::own_conn
    pub(crate) async fn submit(
        &self,
        runs: &[NewRun],
        idem: Option<&Idempotency>,
    ) -> Result<Vec<Submission>, ConnError> {
        let keys = self.redis().keys();
        let mut out = Vec::with_capacity(runs.len());
        let mut to_pump = BTreeSet::new();
        let no_key = keys.idempotency("-");
        let conn = match runs.len() > SUBMIT_CHUNK {
            true => self.redis().own_conn().await?,
            false => self.redis().conn().await?,
        };
        // The pipelines sent and not yet answered, oldest first, with the (runs, queue) of
        // their calls.
        let mut inflight: VecDeque<(Sent, Vec<ChunkIds>)> = VecDeque::new();
        let mut start = 0;
        loop {
            if start < runs.len() {
                let mut pipe = redis::pipe();
                let mut chunks: Vec<ChunkIds> = Vec::new();
                let size = if start == 0 {
                    SUBMIT_CHUNK
                } else {
                    SUBMIT_PIPELINE
                };
                let end = (start + size).min(runs.len());
                let mut i = start;
                while i < end {
                    let first = &runs[i];
                    let q = first
                        .queue
                        .clone()
                        .unwrap_or_else(|| self.queue_of(&first.dag));
                    let mut j = i + 1;
                    while j < end && j - i < SUBMIT_CHUNK && same_chunk(first, &runs[j]) {
                        j += 1;
                    }
                    let chunk = Chunk {
                        runs: &runs[i..j],
                        first_index: i,
                        q: &q,
                    };
                    let (inv, ids) = submit_call(keys, &chunk, idem, &no_key)?;
                    pipe.invoke_script(&inv);
                    chunks.push((ids, q.name));
                    i = j;
                }
                start = end;
                let mut c = conn.same();
                let mut sent: Sent = Box::pin(maybe_done(
                    tokio::task::unconstrained(
                        async move { script_pipeline_on(&mut c, &pipe).await },
                    )
                    .boxed(),
                ));
                // Polled once now, so that it is in the connection's queue before the next one.
                let _ = futures_util::poll!(sent.as_mut());
                inflight.push_back((sent, chunks));
                if inflight.len() < 2 && start < runs.len() {
                    continue;
                }
            }
            let Some((mut sent, chunks)) = inflight.pop_front() else {
                break;
            };
            sent.as_mut().await;
            let replies = sent
                .as_mut()
                .take_output()
                .ok_or_else(|| encoding("a submit pipeline answered twice"))??;
            let mut reused = false;
            for (reply, (ids, queue)) in replies.into_iter().zip(chunks) {
                for s in parse_submissions(reply, ids)? {
                    match s.outcome {
                        Outcome::Waiting => {
                            to_pump.insert(queue.clone());
                        }
                        Outcome::Delayed => self.delayed_added.notify_one(),
                        Outcome::KeyReused => reused = true,
                        _ => {}
                    }
                    out.push(s);
                }
            }
            if reused {
                break;
            }
        }
        for queue in to_pump {
            self.admit_waiting(&queue).await?;
        }
        Ok(out)
    }

    /// Admits the waiting runs of `queue` while capacity allows (ADMIT scripts over the head of
    /// its waiting set). Returns how many were admitted.
    pub(crate) async fn admit_waiting(&self, queue: &str) -> Result<usize, ConnError> {
        let keys = self.redis().keys();
        let limit = self.queue_limit(queue).await?;
        // A queue admits at most `limit` runs at once, so reading (and passing the script) 64
        // candidates each time one of 8 slots frees would cost 8 times the reads it needs.
        let window = match usize::try_from(limit) {
            Ok(n) if n > 0 => n.saturating_add(ADMIT_SLACK).min(ADMIT_BATCH),
            _ => ADMIT_BATCH,
        };
        let mut total = 0;
        // Waiting runs at the head that the pass considered and passed over.
        let mut skip = 0;
        loop {
            let mut c = self.redis().conn().await?;
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys.waiting(queue))
                .arg(skip)
                .arg(skip + window - 1)
                .query_async(&mut *c)
                .await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(keys.run(id))
                    .arg(run_field::DAG)
                    .arg(run_field::DAG_LIMIT)
                    .arg(run_field::PRIORITY)
                    .arg(run_field::SELECTOR)
                    .arg(run_field::SPEC);
            }
            type Meta = (
                Option<String>,
                Option<u32>,
                Option<u8>,
                Option<String>,
                Option<String>,
            );
            let meta: Vec<Meta> = if ids.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut *c).await?
            };
            drop(c);
            let mut inv = scripts::ADMIT.prepare_invoke();
            inv.key(keys.waiting(queue))
                .key(keys.active(queue))
                .key(keys.waiting_queues())
                .key(keys.paused());
            inv.arg(queue).arg(limit);
            for (id, (dag, dlim, pri, selector, spec)) in ids.iter().zip(&meta) {
                let dag = dag.as_deref().unwrap_or(queue);
                let priority = pri.and_then(Priority::new).unwrap_or_default();
                let steps = self.step_streams(spec.as_deref(), priority).await?;
                inv.key(keys.run(id))
                    .key(keys.active_dag(dag))
                    .key(keys.ready_of(priority.get(), selector.as_deref().unwrap_or("")));
                for stream in &steps {
                    inv.key(stream);
                }
                inv.arg(id).arg(dlim.unwrap_or(0)).arg(1 + steps.len());
            }
            let mut pipe = redis::pipe();
            pipe.invoke_script(&inv);
            let (admitted, stopped) = match self.script_pipeline(&pipe).await?.pop() {
                Some(Value::Array(a)) => match a.as_slice() {
                    [Value::Int(n), Value::Int(s)] => ((*n).max(0) as usize, *s == 1),
                    _ => (0, true),
                },
                _ => (0, true),
            };
            total += admitted;
            // The queue is full or paused, or nothing waits behind: done. Otherwise the runs
            // not admitted were held back by their DAG's limit: look behind them.
            if stopped || ids.len() < window {
                return Ok(total);
            }
            skip += ids.len() - admitted;
            if skip >= ADMIT_PASS_OVER {
                return Ok(total);
            }
        }
    }

    /// The ready streams of the steps' own worker selectors of a run of DAG version `spec` at
    /// `priority`, in [`Dag::selectors`] order after the DAG's own (stream indexes 1, 2, ...
    /// of the scripts that queue its held tasks); empty for a DAG without step-level selectors
    /// or when the version is unknown (its held tasks then all name stream 0, or the script
    /// refuses to queue them).
    pub(crate) async fn step_streams(
        &self,
        spec: Option<&str>,
        priority: Priority,
    ) -> Result<Vec<String>, ConnError> {
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        let Some(dag) = self.spec(spec).await? else {
            return Ok(Vec::new());
        };
        let keys = self.redis().keys();
        Ok(dag
            .selectors()
            .iter()
            .skip(1)
            .map(|s| keys.ready_of(priority.get(), s))
            .collect())
    }

    /// Admits waiting runs of every queue that has some (a safety net for admissions missed by
    /// a coordinator that died between a run's finish and its admission pass).
    pub(crate) async fn admit_all_waiting(&self) -> Result<usize, ConnError> {
        let mut c = self.redis().conn().await?;
        let queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.redis().keys().waiting_queues())
            .query_async(&mut *c)
            .await?;
        drop(c);
        let mut total = 0;
        for q in queues {
            total += self.admit_waiting(&q).await?;
        }
        Ok(total)
    }

    /// Pauses (`true`) or resumes a queue; resuming admits its waiting runs.
    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), ConnError> {
        let mut c = self.redis().conn().await?;
        redis::cmd(if paused { "SADD" } else { "SREM" })
            .arg(self.redis().keys().paused())
            .arg(queue)
            .query_async::<()>(&mut *c)
            .await?;
        drop(c);
        if !paused {
            self.admit_waiting(queue).await?;
        }
        Ok(())
    }
}

/// The queue of the child runs of `parallel` step `step` of run `run`:
/// `parallel:<max_concurrent>:<run id>:<step>`. Its limit is in its name, so any coordinator
/// admits its waiting runs without configuration; `:` is never in a configured queue's or a
/// DAG's name.
pub(crate) fn parallel_queue(max_concurrent: u32, run: &str, step: &str) -> String {
    format!("parallel:{max_concurrent}:{run}:{step}")
}

/// The `maxConcurrency` of a [`parallel_queue`] name, `None` for any other queue.
fn parallel_queue_limit(queue: &str) -> Option<u32> {
    queue
        .strip_prefix("parallel:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// The limit of a DAG's own queue (the one named after it): its `maxActiveRuns`, unless the
/// DAG names another queue (0: none).
fn own_queue_limit(dag: &Dag) -> u32 {
    match dag.queue {
        None => dag.max_active_runs.unwrap_or(0),
        Some(_) => 0,
    }
}

/// Whether `b` may share a SUBMIT call with `a`: same DAG version, priority and trigger (and
/// so the same queue, index keys and ready stream).
fn same_chunk(a: &NewRun, b: &NewRun) -> bool {
    a.digest == b.digest
        && a.dag.name == b.dag.name
        && a.priority == b.priority
        && a.trigger == b.trigger
        && a.parent == b.parent
        && a.queue == b.queue
}

/// Consecutive runs created by one SUBMIT call.
struct Chunk<'a> {
    runs: &'a [NewRun],
    /// Index of `runs[0]` in its request (for the `Idempotency-Key` record).
    first_index: usize,
    q: &'a QueueOf,
}

/// The SUBMIT call creating the runs of `chunk` (see `lua/submit.lua` for its layout), and
/// the ids it gives them; `idem`: the request's `Idempotency-Key` (`no_key` stands in KEYS
/// when there is none).
fn submit_call<'a>(
    keys: &Keys,
    chunk: &Chunk<'_>,
    idem: Option<&Idempotency>,
    no_key: &str,
) -> Result<(redis::ScriptInvocation<'a>, Vec<String>), ConnError> {
    let now = model::now_ms();
    let first = &chunk.runs[0];
    let dag = &first.dag;
    let q = chunk.q;
    // The chunk's ready streams: the DAG's selector first (KEYS[4]), then its steps' own,
    // after the runs' keys; a task names its stream by index.
    let selectors = dag.selectors();
    let mut inv = scripts::SUBMIT.prepare_invoke();
    // KEYS[1]: the parent's children index for child runs (flag 'k'), else unused.
    let children = first
        .parent
        .as_ref()
        .map_or_else(|| keys.runs_by_dag(&dag.name), |p| keys.children(&p.run));
    inv.key(children)
        .key(keys.runs_by_dag(&dag.name))
        .key(keys.runs_by_status(RunStatus::Queued.as_str()))
        .key(keys.ready_of(first.priority.get(), &selectors[0]))
        .key(keys.delayed())
        .key(keys.waiting(&q.name))
        .key(keys.active(&q.name))
        .key(keys.active_dag(&dag.name))
        .key(keys.waiting_queues())
        .key(keys.paused())
        .key(keys.events())
        .key(idem.map_or(no_key, |k| k.key.as_str()))
        .arg(&q.name)
        .arg(q.limit)
        .arg(q.dag_limit);
    match idem {
        Some(k) => inv.arg(&k.digest).arg(IDEMPOTENCY_TTL_MS),
        None => inv.arg("").arg(0),
    };
    inv.arg(dagrid_shared::redis::fields::EVENTS_CAP)
        .arg(wait_score(first.priority, now));
    // The run-hash fields every run of the chunk has alike (`stored::NewRunFields` without a
    // run's own params, dedup key, due time and slot); each run passes the rest.
    let fields_of = |run, due| run_fields(first, q, run, due);
    let shared = fields_of(first, None).shared_pairs();
    inv.arg(shared.len());
    for (f, v) in &shared {
        inv.arg(*f).arg(v.as_slice());
    }
    inv.arg(chunk.runs.len());
    let (no_dedup, no_slot) = (keys.dedup(&dag.name, "-"), keys.fired(&dag.name, 0));
    let mut ids = Vec::with_capacity(chunk.runs.len());
    for (i, run) in chunk.runs.iter().enumerate() {
        let id = dagrid_shared::run_id::new();
        let ctx = plan::RunCtx {
            id: &id,
            params: &run.params,
            priority: run.priority,
            resolved: None,
        };
        let (steps, tasks) = plan::start(&run.dag, ctx, now);
        // Dagu `delay_sec`: the run waits that long before its first step, as a delayed run.
        let delay = run.dag.run_policy.delay_ms.map(|d| now.saturating_add(d));
        let due = run.due_ms.max(delay).filter(|d| *d > now);
        let (slot_key, slot_ttl): (std::borrow::Cow<'_, str>, u64) = match run.cron_slot {
            Some((slot, ttl)) if run.restart => (keys.fired_restart(&dag.name, slot).into(), ttl),
            Some((slot, ttl)) => (keys.fired(&dag.name, slot).into(), ttl),
            None => (no_slot.as_str().into(), 0),
        };
        let (dedup, legacy) = run
            .dedup
            .as_ref()
            .map_or((no_dedup.as_str(), no_dedup.as_str()), |d| {
                (d.key.as_str(), d.legacy.as_str())
            });
        inv.key(keys.run(&id))
            .key(dedup)
            .key(legacy)
            .key(&*slot_key);
        let latest = run.dag.overlap == dagrid_shared::dag::OverlapPolicy::Latest;
        let mut flags = String::with_capacity(4);
        if run.dedup.is_some() {
            flags.push('d');
        }
        if run.cron_slot.is_some() {
            flags.push('c');
            // overlapPolicy latest: a slot that meets the previous run stays pending.
            if run.dedup.is_some() && latest && !run.restart {
                flags.push('p');
            }
        }
        if due.is_some() {
            flags.push('l');
        }
        if run.parent.is_some() {
            flags.push('k');
        }
        inv.arg(&id).arg(&flags);
        match idem {
            Some(_) => inv.arg(chunk.first_index + i),
            None => inv.arg(""),
        };
        if let Some(due) = due {
            inv.arg(due).arg(delayed_reason(due));
        }
        if run.cron_slot.is_some() {
            inv.arg(slot_ttl);
        }
        if run.dedup.is_some() {
            // Its field in the holders hash, computed here rather than in Lua.
            let field = Keys::dedup_field(dedup)
                .ok_or_else(|| encoding(format!("dedup key {dedup} does not end in a digest")))?;
            inv.arg(field);
        }
        // The script writes the `dedup` field itself, from the dedup key it is given.
        let mut fields = fields_of(run, due).own_pairs().map_err(encoding)?;
        fields.retain(|(f, _)| *f != run_field::DEDUP);
        inv.arg(fields.len() + steps.len());
        for (f, v) in &fields {
            inv.arg(*f).arg(v.as_slice());
        }
        for (name, state) in &steps {
            inv.arg(format!("{}{name}", run_field::STEP_PREFIX))
                .arg(dagrid_shared::stored::encode_new_step(state).map_err(encoding)?);
        }
        inv.arg(tasks.len());
        for t in &tasks {
            inv.arg(&t.step)
                .arg(stream_index(&selectors, &run.dag, &t.step))
                .arg(
                    dagrid_shared::ready::encode(t, &run.dag, &run.digest, &run.params)
                        .map_err(encoding)?,
                );
        }
        // Its events, packed as a transition's are: its queued steps, the run's `queued`
        // riding on the first (or an entry of its own when no step is queued).
        let events: Vec<dagrid_shared::transition::SectionEvent> = steps
            .iter()
            .filter(|(_, s)| s.status != model::StepStatus::Pending)
            .map(|(name, s)| (name.clone(), s.status.as_str(), s.attempt.to_string()))
            .chain([(String::new(), RunStatus::Queued.as_str(), String::new())])
            .collect();
        let entries = dagrid_shared::transition::section_entries(&id, &run.dag.name, &events)
            .map_err(encoding)?;
        inv.arg(entries.len());
        for e in &entries {
            inv.arg(e.as_slice());
        }
        ids.push(id);
    }
    for selector in &selectors[1..] {
        inv.key(keys.ready_of(first.priority.get(), selector));
    }
    inv.key(keys.dedup_holders());
    Ok((inv, ids))
}

/// The index in `selectors` ([`Dag::selectors`] of `dag`) of the ready stream of `step`.
fn stream_index(selectors: &[String], dag: &Dag, step: &str) -> usize {
    if selectors.len() == 1 {
        return 0;
    }
    let of = dag.selector_of(step);
    selectors.iter().position(|s| *s == of).unwrap_or(0)
}

/// The run-hash fields of `run`, in a chunk that starts with `first` and goes through queue
/// `q`. No creation time: the run's id holds it ([`dagrid_shared::run_id::created_ms`]).
fn run_fields<'a>(
    first: &'a NewRun,
    q: &'a QueueOf,
    run: &'a NewRun,
    due: Option<u64>,
) -> dagrid_shared::stored::NewRunFields<'a> {
    dagrid_shared::stored::NewRunFields {
        dag: &first.dag.name,
        spec: &first.digest,
        params: &run.params,
        priority: first.priority,
        selector: &first.dag.worker_selector,
        queue: &q.name,
        dag_limit: q.dag_limit,
        trigger: first.trigger.as_str(),
        dedup: run.dedup.as_ref().map(|d| (d.key.as_str(), d.window_ms)),
        due_ms: due,
        slot_ms: run.cron_slot.map(|(slot, _)| slot),
        parent: first.parent.as_ref(),
    }
}

/// The reason a delayed run shows: `delayed until <RFC 3339 time, UTC>`.
fn delayed_reason(due_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(due_ms);
    format!("delayed until {}", humantime::format_rfc3339_millis(t))
}

/// The [`Submission`]s of a SUBMIT call for the runs it was to create with `ids`.
fn parse_submissions(reply: Value, ids: Vec<String>) -> Result<Vec<Submission>, ConnError> {
    let bad = || encoding("unexpected reply from the submit script");
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let bytes = |v: Value| match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    };
    let items: Vec<Vec<u8>> = items
        .into_iter()
        .map(bytes)
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if items.len() == 1 && items[0] == b"conflict" {
        return Ok(ids
            .into_iter()
            .map(|_| Submission {
                id: String::new(),
                outcome: Outcome::KeyReused,
                reason: None,
            })
            .collect());
    }
    if items.len() != ids.len() {
        return Err(bad());
    }
    items
        .into_iter()
        .zip(ids)
        .map(|(item, id)| {
            let (code, rest) = item.split_first().ok_or_else(bad)?;
            let rest = || String::from_utf8_lossy(rest).into_owned();
            let (outcome, id, reason) = match code {
                b'a' => (Outcome::Admitted, id, None),
                b'w' => (Outcome::Waiting, id, Some(rest())),
                b'l' => (Outcome::Delayed, id, Some(rest())),
                b'd' => (Outcome::Deduplicated, rest(), None),
                b'f' => (Outcome::AlreadyFired, rest(), None),
                b'r' => {
                    // `c:<id>` or `d:<id>`.
                    let r = rest();
                    let outcome = if r.starts_with("d:") {
                        Outcome::ReplayedDeduplicated
                    } else {
                        Outcome::Replayed
                    };
                    (outcome, r.get(2..).unwrap_or_default().to_string(), None)
                }
                // A run id collision (a UUIDv7's): never in practice; surfaced as an error
                // rather than lost.
                b'x' => return Err(encoding(format!("run id {id} exists already"))),
                _ => return Err(bad()),
            };
            Ok(Submission {
                id,
                outcome,
                reason: reason.filter(|r| !r.is_empty()),
            })
        })
        .collect()
}
