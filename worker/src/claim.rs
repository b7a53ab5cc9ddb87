//! The claim loop: as slots free up, takes the most urgent ready steps from the ready streams
//! of the priority levels (the claim script, then one blocking `XREADGROUP` only when every
//! level is empty), holds a [`Lease`] on each and hands each to a step task
//! ([`crate::step`]). While steps are short it claims one more ahead of a free slot, started
//! as soon as a slot frees up ([`AHEAD_BELOW`], [`AHEAD_HOLD`]). Redis errors never stop it
//! (back-off, a new connection, the consumer groups made again); at shutdown a read in flight
//! is woken with `CLIENT UNBLOCK` and what was claimed but not started is handed back. The
//! design, strict priority included, is in docs/architecture.md ("Flow of a run", Claim;
//! "Shutdown").

use dagrid_shared::labels::Labels;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dagrid_shared::dag::Priority;
use dagrid_shared::model::{self, StepTask};
use dagrid_shared::redis::conn::{self, BLOCK_TIMEOUT};
use dagrid_shared::redis::keys::Keys;
use dagrid_shared::redis::keys::{COORDINATOR_GROUP, WORKER_GROUP};
use dagrid_shared::redis::scripts;
use dagrid_shared::{ready, ConnError, Redis};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{RedisError, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::exec;
use crate::health::Signals;
use crate::lease::{Lease, Leases};
use crate::report::{EntryRef, Report, RunHint};
use crate::step::StepRunner;
use crate::task::{self, Unrunnable};

/// How often a read in flight at shutdown is sent `CLIENT UNBLOCK` until it returns (the
/// unblock can arrive before the read does).
const UNBLOCK_EVERY: Duration = Duration::from_millis(100);
/// How often a worker with labels reads the registered worker selectors again (2 s, the
/// blocking read's timeout): a DAG registered with a new selector matching it has its steps
/// read within that.
const SELECTORS_EVERY: Duration = BLOCK_TIMEOUT;
/// How long one `CLIENT UNBLOCK` may take.
const UNBLOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// A step is claimed ahead of a free slot only while this worker's last step process ran
/// shorter than this (50 ms, the delay of a `started` report,
/// [`crate::report::STARTED_REPORT_DELAY`]): the slot that frees up next starts it at once,
/// without waiting for a claim's round trip, and the claim that refills goes out while the
/// steps run. Longer steps gain nothing from it, and an entry held behind them would wait.
pub(crate) const AHEAD_BELOW: Duration = crate::report::STARTED_REPORT_DELAY;
/// How long an entry claimed ahead waits for a slot of this worker before it is handed back
/// (500 ms), so that an idle worker runs it.
const AHEAD_HOLD: Duration = Duration::from_millis(500);

/// Why a claimed entry is handed back unstarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandBack {
    /// The worker is shutting down.
    Shutdown,
    /// It was claimed ahead of a free slot and none freed up within [`AHEAD_HOLD`].
    Held,
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Everything the claim loop and its step tasks share.
#[derive(Debug, Clone)]
pub(crate) struct Claimer {
    /// What each step task is given.
    pub(crate) runner: StepRunner,
    /// One permit per slot.
    pub(crate) slots: Arc<Semaphore>,
    /// The step tasks.
    pub(crate) steps: TaskTracker,
    /// The ready entries held, refreshed by the heartbeat.
    pub(crate) leases: Arc<Leases>,
    /// Stamped when each read attempt starts and when it finishes, for the stall rule
    /// ([`crate::health::stalled`]).
    pub(crate) progress: Arc<Signals>,
    /// The worker's labels: it also reads the ready streams of the worker selectors they
    /// satisfy.
    pub(crate) labels: Labels,
}

/// The dedicated connection of the blocking reads, and its Redis client id (for CLIENT
/// UNBLOCK).
struct Reader {
    conn: MultiplexedConnection,
    client_id: i64,
    /// The last blocking read found nothing: every level stayed empty while it waited, so the
    /// next claim blocks again at once instead of running the claim script first (an idle
    /// worker sends one command per block timeout, not eleven).
    idle: bool,
}

/// The ready streams this worker reads, highest priority level first (the order in which
/// they are read): per level, the plain stream, then those of the registered worker selectors
/// its labels satisfy ([`matching_selectors`]).
struct Levels(Vec<(Priority, Arc<str>)>);

impl Levels {
    fn new(keys: &Keys, selectors: &[String]) -> Self {
        Self(
            Priority::levels_high_to_low()
                .flat_map(|p| {
                    std::iter::once("")
                        .chain(selectors.iter().map(String::as_str))
                        .map(move |s| (p, Arc::from(keys.ready_of(p.get(), s))))
                })
                .collect(),
        )
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, key)| &**key)
    }

    /// The level of ready stream `key`, and the key.
    fn of(&self, key: &str) -> Result<(Priority, Arc<str>), ClaimError> {
        self.0
            .iter()
            .find(|(_, k)| &**k == key)
            .map(|(p, k)| (*p, k.clone()))
            .ok_or_else(|| ClaimError::Reply(format!("an entry of unknown stream {key:?}")))
    }
}

/// The registered worker selectors ([`dagrid_shared::Keys::selectors`]) that `labels`
/// satisfy, sorted; none (and no round trip) for a worker without labels.
pub(crate) async fn matching_selectors(
    redis: &Redis,
    labels: &Labels,
) -> Result<Vec<String>, ConnError> {
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    Ok(conn::selectors(redis)
        .await?
        .into_iter()
        .filter(|s| Labels::parse_list(s).is_ok_and(|sel| labels.satisfies(&sel)))
        .collect())
}

/// Every ready stream a worker with `labels` reads, with its level (see [`Levels`]).
pub(crate) async fn ready_streams(
    redis: &Redis,
    labels: &Labels,
) -> Result<Vec<(Priority, String)>, ConnError> {
    let selectors = matching_selectors(redis, labels).await?;
    Ok(Levels::new(redis.keys(), &selectors)
        .0
        .into_iter()
        .map(|(p, k)| (p, k.to_string()))
        .collect())
}

/// One entry claimed from a ready stream.
#[derive(Debug)]
struct Claimed {
    /// The stream it was read from, where it is acknowledged.
    stream: Arc<str>,
    /// That stream's priority level.
    level: Priority,
    /// The entry id.
    id: String,
    /// Its field `t` (a msgpack [`StepTask`]), `None` when it has none.
    t: Option<Value>,
    /// Its run as read with a later claim ([`RunHint`]).
    hint: Arc<RunHint>,
}

impl Claimed {
    /// The entry's stream and id, for its reports.
    fn entry_ref(&self) -> EntryRef {
        EntryRef {
            stream: self.stream.clone(),
            id: self.id.clone(),
            hint: self.hint.clone(),
        }
    }
}

/// Why a round of the loop failed.
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The claim script answered something it never returns.
    #[error("unexpected reply of the claim script: {0}")]
    Reply(String),
}

impl ClaimError {
    /// True when the ready stream or its group is gone (NOGROUP), for example after Redis lost
    /// its data: the groups must be made again.
    fn is_no_group(&self) -> bool {
        let e = match self {
            ClaimError::Redis(e) | ClaimError::Conn(ConnError::Redis(e)) => e,
            ClaimError::Conn(_) | ClaimError::Reply(_) => return false,
        };
        e.code() == Some("NOGROUP")
    }
}

/// Makes the consumer groups of the ready streams of every level (workers) and of the results
/// stream (coordinators) if they do not exist, and loads the Lua scripts.
pub(crate) async fn prepare(redis: &Redis) -> Result<(), ConnError> {
    let keys = redis.keys();
    for (_, ready) in conn::all_ready_streams(redis).await? {
        conn::ensure_group(redis, &ready, WORKER_GROUP).await?;
    }
    conn::ensure_group(redis, &keys.results(), COORDINATOR_GROUP).await?;
    let mut c = redis.conn().await?;
    conn::load_scripts(&mut c).await
}

impl Claimer {
    /// Claims and starts steps until `shutdown` is cancelled. Returns once no more steps will
    /// be started; the steps already started keep running in [`Claimer::steps`].
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut levels = Levels::new(self.runner.redis.keys(), &[]);
        // When the selectors matching this worker's labels were last read (never, without
        // labels: no selector can match).
        let mut selectors_read: Option<Instant> = None;
        let mut reader: Option<Reader> = None;
        let mut backoff = Backoff::new();
        // Entries claimed while no slot was free, most urgent first, with when each was
        // claimed: they start as slots free up, or are handed back after AHEAD_HOLD.
        let mut held: VecDeque<(Claimed, Lease, Instant)> = VecDeque::new();
        // The last claim made ahead of a free slot found nothing: the next claim waits for one.
        let mut dry = false;
        // The runs of steps claimed while steps are short, read with the next claim (see
        // RunHint): run key, and the hint their final report reads.
        let mut to_read: Vec<(String, Weak<RunHint>)> = Vec::new();
        loop {
            let mut permits = Vec::new();
            if !held.is_empty() || dry || !self.short_steps() {
                let hold_until = held.front().map(|(_, _, at)| *at + AHEAD_HOLD);
                let first = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    permit = self.slots.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break, // closed: not done by this crate
                    },
                    _ = sleep_until_some(hold_until) => {
                        // The slots stayed busy: let another worker run what waits here.
                        for (entry, _lease, _) in held.drain(..) {
                            self.hand_back(entry, HandBack::Held).await;
                        }
                        // And claims ahead again only once a slot frees up.
                        dry = true;
                        continue;
                    }
                };
                permits.push(first);
            }
            while let Ok(p) = self.slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            // What was claimed ahead starts first, without a round trip to Redis. The claim
            // that refills follows after one yield: the steps just started send their spawn
            // requests first, and the reporter, which yields too before it plans the final
            // report that freed the slot, queues its write in the same turn as this claim,
            // so both leave in one write.
            let mut started = false;
            while !permits.is_empty() {
                let Some((entry, lease, _)) = held.pop_front() else {
                    break;
                };
                let permit = permits.pop().expect("a permit");
                self.dispatch(entry, lease, permit).await;
                started = true;
            }
            if started {
                tokio::task::yield_now().await;
            }
            let ahead = usize::from(held.is_empty() && self.short_steps());
            if permits.is_empty() && ahead == 0 {
                continue;
            }
            if !self.labels.is_empty()
                && selectors_read.is_none_or(|t| t.elapsed() >= SELECTORS_EVERY)
            {
                match matching_selectors(&self.runner.redis, &self.labels).await {
                    Ok(selectors) => {
                        levels = Levels::new(self.runner.redis.keys(), &selectors);
                        selectors_read = Some(Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(cause = %e, "cannot read the worker selectors; reading the streams known so far")
                    }
                }
            }
            self.progress.claim_attempt();
            let result = if permits.is_empty() {
                // Only ahead of a free slot: the claim script, never a blocking read, which
                // would take new steps from idle workers.
                self.claim(&levels, ahead, &mut to_read).await
            } else {
                match reader.as_mut() {
                    Some(r) => {
                        self.take(r, &levels, permits.len(), ahead, &mut to_read, &shutdown)
                            .await
                    }
                    None => {
                        let connected = tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => break,
                            c = self.connect() => c,
                        };
                        match connected {
                            Ok(r) => {
                                let r = reader.insert(r);
                                self.take(r, &levels, permits.len(), ahead, &mut to_read, &shutdown)
                                    .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            self.progress.claim_attempt();
            match result {
                Ok(entries) => {
                    backoff.reset();
                    dry = permits.is_empty() && entries.is_empty();
                    if self.short_steps() {
                        let keys = self.runner.redis.keys();
                        to_read.extend(entries.iter().filter_map(|e| match &e.t {
                            Some(Value::BulkString(t)) => {
                                Some((keys.run(&ready::run_id_of(t)?), Arc::downgrade(&e.hint)))
                            }
                            _ => None,
                        }));
                    }
                    let entries: Vec<(Claimed, Lease)> = entries
                        .into_iter()
                        .map(|e| {
                            let lease = self.leases.hold(&e.stream, &e.id);
                            (e, lease)
                        })
                        .collect();
                    for (entry, lease) in entries {
                        if shutdown.is_cancelled() {
                            self.hand_back(entry, HandBack::Shutdown).await;
                            continue;
                        }
                        // Beyond the free slots: the entry claimed ahead, or more than the
                        // slots from the blocking read (its COUNT is per stream).
                        match permits.pop() {
                            Some(permit) => self.dispatch(entry, lease, permit).await,
                            None => held.push_back((entry, lease, Instant::now())),
                        }
                    }
                    drop(permits);
                    // Let the step tasks just started send their spawn requests before this
                    // loop sends its next claim (the runtime has one thread and runs tasks in
                    // order): an idle worker with slots left starts a step that much sooner.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    drop(permits);
                    reader = None;
                    if let ClaimError::Redis(r) = &e {
                        conn::count_error(r);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(worker.id = %self.runner.worker_id, cause = %e, retry_in = ?delay, "cannot read ready steps from Redis; retrying");
                    if e.is_no_group() {
                        if let Err(e) = prepare(&self.runner.redis).await {
                            tracing::warn!(cause = %e, "cannot recreate the consumer groups");
                        }
                    }
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        for (entry, _lease, _) in held.drain(..) {
            self.hand_back(entry, HandBack::Shutdown).await;
        }
        tracing::info!(worker.id = %self.runner.worker_id, "stopped claiming steps");
    }

    /// Whether this worker's steps are short enough to claim one ahead of a free slot: its
    /// last step process ran under [`AHEAD_BELOW`].
    fn short_steps(&self) -> bool {
        self.runner.last_run_ms.load(Ordering::Relaxed) < AHEAD_BELOW.as_millis() as u64
    }

    /// A new dedicated connection and its client id.
    async fn connect(&self) -> Result<Reader, ClaimError> {
        let mut conn = self.runner.redis.blocking_conn().await?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        Ok(Reader {
            conn,
            client_id,
            idle: false,
        })
    }

    /// Claims up to `count` entries (`count + ahead` from the claim script), the most urgent
    /// first: the claim script, then, only when it found every level empty, one blocking read
    /// of at most `count` (docs/architecture.md, "Flow of a run"). Empty when the blocking
    /// read timed out or was unblocked at shutdown.
    async fn take(
        &self,
        reader: &mut Reader,
        levels: &Levels,
        count: usize,
        ahead: usize,
        to_read: &mut Vec<(String, Weak<RunHint>)>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Claimed>, ClaimError> {
        if !reader.idle {
            let claimed = self.claim(levels, count + ahead, to_read).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        let read = self.read(reader, levels, count, shutdown).await?;
        reader.idle = read.is_empty();
        Ok(read)
    }

    /// The claim script (`claim.lua`) for at most `count` entries: non-blocking, highest level
    /// first, one round trip (two when Redis lost the script and it is loaded again).
    ///
    /// It goes over the shared multiplexed connection, not the reader's: a slot frees up when
    /// its step's final report is queued, so the reporter's write for that run and this claim
    /// are sent in the same turn of the runtime and leave in one write, which Redis reads,
    /// runs and answers in one go (one request cycle of Redis per step fewer than two
    /// connections cost). Only the blocking read needs a connection of its own.
    ///
    /// The runs of `to_read` (taken from it) whose steps still run are read in the same
    /// pipeline, one `HGETALL` each, into their [`RunHint`]s: the final reports of those steps
    /// then need no read of their own.
    async fn claim(
        &self,
        levels: &Levels,
        count: usize,
        to_read: &mut Vec<(String, Weak<RunHint>)>,
    ) -> Result<Vec<Claimed>, ClaimError> {
        let mut call = scripts::CLAIM.prepare_invoke();
        for key in levels.keys() {
            call.key(key);
        }
        call.arg(WORKER_GROUP)
            .arg(&self.runner.worker_id)
            .arg(count);
        let reads: Vec<(String, Arc<RunHint>)> = to_read
            .drain(..)
            .filter_map(|(key, hint)| Some((key, hint.upgrade().filter(|h| h.wanted())?)))
            .collect();
        if reads.is_empty() {
            let mut conn = self.runner.redis.conn().await?;
            let reply: Value = call.invoke_async(&mut conn).await?;
            return parse_claim(reply, levels);
        }
        let mut pipe = redis::pipe();
        for (key, _) in &reads {
            pipe.cmd("HGETALL").arg(key);
        }
        pipe.invoke_script(&call);
        let mut replies = self.runner.redis.script_pipeline(&pipe).await?;
        let reply = replies
            .pop()
            .ok_or_else(|| ClaimError::Reply("no reply to the claim script".into()))?;
        for ((_, hint), fields) in reads.iter().zip(replies) {
            if let Ok(fields) = redis::from_redis_value(fields) {
                hint.fill(fields);
            }
        }
        parse_claim(reply, levels)
    }

    /// One blocking read of at most `count` entries per level, across every level; empty when
    /// it timed out or was unblocked at shutdown. The entries come highest level first.
    async fn read(
        &self,
        reader: &mut Reader,
        levels: &Levels,
        count: usize,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Claimed>, ClaimError> {
        if shutdown.is_cancelled() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WORKER_GROUP)
            .arg(&self.runner.worker_id)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK_TIMEOUT.as_millis() as u64)
            .arg("STREAMS");
        for key in levels.keys() {
            cmd.arg(key);
        }
        for _ in levels.keys() {
            cmd.arg(">");
        }
        let client_id = reader.client_id;
        let read = cmd.query_async::<Option<StreamReadReply>>(&mut reader.conn);
        tokio::pin!(read);
        let reply = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let deadline = Instant::now() + BLOCK_TIMEOUT + Duration::from_secs(1);
                loop {
                    self.unblock(client_id).await;
                    match tokio::time::timeout(UNBLOCK_EVERY, &mut read).await {
                        Ok(reply) => break reply,
                        Err(_) if Instant::now() < deadline => {}
                        Err(_) => {
                            tracing::warn!(
                                worker.id = %self.runner.worker_id,
                                "the ready-stream read in flight at shutdown did not return; entries it may have claimed are re-queued by the coordinator"
                            );
                            return Ok(Vec::new());
                        }
                    }
                }
            }
            reply = &mut read => reply,
        }?;
        let mut claimed = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let (level, key) = levels.of(&stream.key)?;
            claimed.extend(stream.ids.into_iter().map(|mut entry| Claimed {
                stream: key.clone(),
                level,
                t: entry.map.remove("t"),
                id: entry.id,
                hint: Arc::default(),
            }));
        }
        // Stable: oldest first within a level.
        claimed.sort_by_key(|c| std::cmp::Reverse(c.level));
        Ok(claimed)
    }

    /// `CLIENT UNBLOCK <id>` from a pooled connection; best effort.
    async fn unblock(&self, client_id: i64) {
        let attempt = async {
            let mut c = self.runner.redis.conn().await?;
            redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client_id)
                .query_async::<i64>(&mut *c)
                .await?;
            Ok::<_, ClaimError>(())
        };
        match tokio::time::timeout(UNBLOCK_TIMEOUT, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(cause = %e, "CLIENT UNBLOCK failed"),
            Err(_) => tracing::debug!("CLIENT UNBLOCK timed out"),
        }
    }

    /// Starts a task for one ready entry, or discards an entry that does not decode (an
    /// attempt that cannot run is reported failed).
    async fn dispatch(&self, entry: Claimed, lease: Lease, permit: OwnedSemaphorePermit) {
        match self.decode(&entry).await {
            Ok(task) => {
                let span = tracing::info_span!(
                    "step",
                    run.id = %task.run_id,
                    step = %task.step,
                    attempt = task.attempt,
                );
                // Boxed where it is made: the step's future is some 10 KiB, and the tracker,
                // the span and the runtime would each copy it again (callgrind: a fifth of the
                // worker's instructions per step went to those copies).
                self.steps.spawn(
                    Box::pin(
                        self.runner
                            .clone()
                            .run(entry.entry_ref(), task, permit, lease),
                    )
                    .instrument(span),
                );
            }
            Err(Unrunnable::Failed(task, why)) => {
                drop(permit);
                self.fail_unrunnable(entry, &task, why).await;
            }
            Err(Unrunnable::Unavailable(task, why)) => {
                drop(permit);
                self.release_unresolved(entry, &task, why).await;
            }
            Err(Unrunnable::Undecodable(reason)) => {
                drop(permit);
                self.discard(&entry, &reason).await;
            }
        }
    }

    /// Hands back an entry claimed but not started (at shutdown, or held ahead of a slot that
    /// stayed busy): a `Released` report, which acknowledges and deletes it and queues the
    /// attempt again without counting it (an entry that does not decode is discarded instead).
    async fn hand_back(&self, entry: Claimed, why: HandBack) {
        match self.decode(&entry).await {
            Ok(task) => {
                let mut outcome = exec::released_before_start(&task, &self.runner.log_dir);
                match why {
                    HandBack::Shutdown => tracing::info!(
                        run.id = %task.run_id,
                        step = %task.step,
                        attempt = task.attempt,
                        "shutting down: handing back a claimed step that has not started"
                    ),
                    HandBack::Held => {
                        tracing::info!(
                            run.id = %task.run_id,
                            step = %task.step,
                            attempt = task.attempt,
                            held_ms = AHEAD_HOLD.as_millis() as u64,
                            "handing back a step claimed ahead: no slot of this worker freed up in time"
                        );
                        outcome.error = Some(format!(
                            "handed back: claimed ahead of a free slot, none freed up within {} ms",
                            AHEAD_HOLD.as_millis()
                        ));
                    }
                }
                self.runner
                    .queue(Report::finished(
                        &task,
                        &self.runner.worker_id,
                        entry.entry_ref(),
                        outcome,
                    ))
                    .await;
            }
            Err(Unrunnable::Failed(task, why)) => self.fail_unrunnable(entry, &task, why).await,
            Err(Unrunnable::Unavailable(task, why)) => {
                self.release_unresolved(entry, &task, why).await
            }
            Err(Unrunnable::Undecodable(reason)) => self.discard(&entry, &reason).await,
        }
    }

    /// Hands back an attempt whose DAG version Redis could not give (see [`task::resolve`]): a
    /// `Released` report, delivered once Redis answers, so it runs again without counting an
    /// attempt.
    async fn release_unresolved(&self, entry: Claimed, task: &StepTask, why: String) {
        tracing::warn!(run.id = %task.run_id, step = %task.step, attempt = task.attempt, cause = %why, "cannot read the step's DAG version; handing the attempt back");
        let outcome = exec::Outcome {
            error: Some(format!("handed back: {why}")),
            ..exec::released_before_start(task, &self.runner.log_dir)
        };
        self.runner
            .queue(Report::finished(
                task,
                &self.runner.worker_id,
                entry.entry_ref(),
                outcome,
            ))
            .await;
    }

    /// Reports failed an attempt that cannot run (see [`task::resolve`]).
    async fn fail_unrunnable(&self, entry: Claimed, task: &StepTask, why: String) {
        tracing::error!(run.id = %task.run_id, step = %task.step, attempt = task.attempt, cause = %why, "step cannot run; reporting its attempt failed");
        let outcome = exec::Outcome {
            kind: model::ReportKind::Failed,
            error: Some(format!("the step cannot run: {why}")),
            ..exec::released_before_start(task, &self.runner.log_dir)
        };
        self.runner
            .queue(Report::finished(
                task,
                &self.runner.worker_id,
                entry.entry_ref(),
                outcome,
            ))
            .await;
    }

    /// The step task of a ready entry ([`decode`], resolved through [`task::SPECS`]).
    async fn decode(&self, entry: &Claimed) -> Result<StepTask, Unrunnable> {
        let mut task = match &entry.t {
            Some(Value::BulkString(bytes)) => {
                task::resolve(&task::SPECS, &self.runner.redis, bytes)
                    .await
                    .map_err(|e| match e {
                        Unrunnable::Failed(mut task, why) => {
                            at_level(&mut task, entry);
                            Unrunnable::Failed(task, why)
                        }
                        Unrunnable::Unavailable(mut task, why) => {
                            at_level(&mut task, entry);
                            Unrunnable::Unavailable(task, why)
                        }
                        other => other,
                    })?
            }
            _ => decode(entry).map_err(Unrunnable::Undecodable)?,
        };
        at_level(&mut task, entry);
        Ok(task)
    }

    /// Acknowledges and deletes an entry that is not a step task.
    async fn discard(&self, entry: &Claimed, reason: &str) {
        tracing::error!(
            entry.id = %entry.id,
            cause = %reason,
            "a ready-stream entry is not a step task this worker can read; acknowledging and deleting it"
        );
        if let Err(e) = conn::ack_and_delete(
            &self.runner.redis,
            &entry.stream,
            WORKER_GROUP,
            std::slice::from_ref(&entry.id),
        )
        .await
        {
            tracing::error!(entry.id = %entry.id, cause = %e, "cannot delete the unreadable entry; it stays pending");
        }
    }
}
/// The step task of a ready entry in the whole-task form, or why it is none. A task that
/// names another priority than its stream's is treated as of its stream's level (where its
/// entry is acknowledged).
fn decode(entry: &Claimed) -> Result<StepTask, String> {
    let mut task = match &entry.t {
        Some(Value::BulkString(bytes)) => {
            model::decode::<StepTask>(bytes).map_err(|e| e.to_string())?
        }
        Some(other) => return Err(format!("field t is not a string: {other:?}")),
        None => return Err("no field t".to_string()),
    };
    at_level(&mut task, entry);
    Ok(task)
}

/// Treats `task` as of its entry's stream level.
fn at_level(task: &mut StepTask, entry: &Claimed) {
    if task.priority != entry.level {
        tracing::warn!(
            entry.id = %entry.id,
            task.priority = %task.priority,
            stream.priority = %entry.level,
            "a step task sits in the ready stream of another priority; treating it as of its stream's level"
        );
        task.priority = entry.level;
    }
}

/// The claim script's reply: a flat array of (stream key, entry id, field `t` or nil) triples.
fn parse_claim(reply: Value, levels: &Levels) -> Result<Vec<Claimed>, ClaimError> {
    let items = match reply {
        Value::Array(items) if items.len() % 3 == 0 => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(ClaimError::Reply(format!("{other:?}"))),
    };
    let text = |v: Value| {
        redis::from_redis_value::<String>(v).map_err(|e| ClaimError::Reply(e.to_string()))
    };
    let mut claimed = Vec::with_capacity(items.len() / 3);
    let mut items = items.into_iter();
    while let (Some(key), Some(id), Some(t)) = (items.next(), items.next(), items.next()) {
        let (level, stream) = levels.of(&text(key)?)?;
        claimed.push(Claimed {
            stream,
            level,
            id: text(id)?,
            t: match t {
                Value::Nil | Value::Boolean(false) => None,
                t => Some(t),
            },
            hint: Arc::default(),
        });
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::supervisor::Launcher;

    fn step_task() -> StepTask {
        StepTask {
            call: None,
            run_id: "r".into(),
            dag: "d".into(),
            step: "s".into(),
            attempt: 1,
            token: "t".into(),
            command: Some("true".into()),
            script: None,
            shell: None,
            dir: None,
            env: Vec::new(),
            expand: Vec::new(),
            args: Vec::new(),
            output: None,
            queued_ms: 0,
            priority: Priority::HIGH,
            timeout_ms: None,
            stop_signal: None,
            cleanup_ms: 1_000,
            ignore_preconditions: false,
            preconditions: vec![],
            dag_preconditions: vec![],
            continue_on_output: vec![],
            repeat: None,
            max_output_size: None,
            repeats: 0,
            dag_values: Default::default(),
        }
    }

    fn entry(level: Priority, t: Option<Value>) -> Claimed {
        Claimed {
            stream: Arc::from(format!("{{dagrid}}:ready:{level}")),
            level,
            id: "1-0".into(),
            t,
            hint: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_step_handed_back_unstarted_is_reported_released() {
        // Never connected: handing back a readable entry only queues a report.
        let (claimer, mut queued) = claimer(Redis::open("redis://127.0.0.1:1", "t").unwrap(), 1);
        let bytes = model::encode(&step_task()).unwrap();
        claimer
            .hand_back(
                entry(Priority::HIGH, Some(Value::BulkString(bytes))),
                HandBack::Shutdown,
            )
            .await;
        match queued.try_recv().unwrap() {
            Report::Finished {
                report,
                entry_id,
                stream,
                ..
            } => {
                assert_eq!(report.kind, model::ReportKind::Released);
                assert_eq!(report.token, "t");
                assert_eq!(
                    report.error.as_deref(),
                    Some("handed back at worker shutdown before it started")
                );
                assert_eq!(entry_id, "1-0");
                assert_eq!(&*stream, "{dagrid}:ready:8");
            }
            other => panic!("not a final report: {other:?}"),
        }
    }

    /// A claimer of worker `w` on `redis`, with `slots` slots, and the receiver of the reports
    /// its steps queue.
    fn claimer(redis: Redis, slots: usize) -> (Claimer, tokio::sync::mpsc::Receiver<Report>) {
        let (reports, queued) = crate::report::channel(4);
        let claimer = Claimer {
            runner: StepRunner {
                redis,
                worker_id: "w".into(),
                log_dir: PathBuf::from("/logs"),
                inherited: Arc::default(),
                launcher: Arc::new(Launcher::Direct),
                busy: Arc::new(AtomicUsize::new(0)),
                last_run_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
                reports,
                release: CancellationToken::new(),
            },
            slots: Arc::new(Semaphore::new(slots)),
            steps: TaskTracker::new(),
            leases: Arc::new(Leases::default()),
            progress: Arc::new(Signals::new(
                Arc::new(AtomicUsize::new(0)),
                1,
                Duration::from_secs(3),
                0,
                CancellationToken::new(),
            )),
            labels: Labels::new(),
        };
        (claimer, queued)
    }

    /// A claim reads, in its own pipeline, the runs of earlier claimed steps whose hints are
    /// still wanted (into those hints), skips those no longer wanted, and empties the list.
    #[tokio::test]
    async fn a_claim_reads_the_runs_of_steps_claimed_before_into_their_hints() {
        let (_server, redis) = crate::report::tests::redis_with_groups().await;
        let keys = redis.keys().clone();
        let mut c = redis.conn().await.unwrap();
        for (run, ver) in [("r1", "3"), ("r2", "4")] {
            redis::cmd("HSET")
                .arg(keys.run(run))
                .arg("ver")
                .arg(ver)
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        for _ in 0..2 {
            redis::cmd("XADD")
                .arg(keys.ready(5))
                .arg("*")
                .arg("t")
                .arg("x")
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        let (claimer, _reports) = claimer(redis.clone(), 1);
        let levels = Levels::new(&keys, &[]);
        let mut to_read = Vec::new();
        let first = claimer.claim(&levels, 1, &mut to_read).await.unwrap();
        assert_eq!(first.len(), 1);
        // One hint still wanted, one whose entry is gone (its Arc dropped).
        let gone = Arc::new(RunHint::default());
        to_read.push((keys.run("r1"), Arc::downgrade(&first[0].hint)));
        to_read.push((keys.run("r2"), Arc::downgrade(&gone)));
        drop(gone);
        let second = claimer.claim(&levels, 1, &mut to_read).await.unwrap();
        assert_eq!(second.len(), 1);
        assert!(to_read.is_empty());
        assert!(!first[0].hint.wanted(), "filled");
        let entry = first[0].entry_ref();
        assert_eq!(
            *entry.hint,
            {
                let expected = RunHint::default();
                expected.fill([("ver".to_string(), b"3".to_vec())].into());
                expected
            },
            "r1 as stored"
        );
        assert!(second[0].hint.wanted(), "not read yet");
    }

    #[test]
    fn entries_decode_to_tasks_of_their_streams_level() {
        let bytes = model::encode(&step_task()).unwrap();
        let task = decode(&entry(Priority::LOW, Some(Value::BulkString(bytes)))).unwrap();
        assert_eq!(task.priority, Priority::LOW);
        assert_eq!(task.step, "s");
        assert_eq!(
            decode(&entry(Priority::LOW, None)).unwrap_err(),
            "no field t"
        );
        assert!(decode(&entry(
            Priority::LOW,
            Some(Value::BulkString(b"not msgpack".to_vec()))
        ))
        .is_err());
        assert!(decode(&entry(Priority::LOW, Some(Value::Int(1))))
            .unwrap_err()
            .starts_with("field t is not a string"));
    }
}
