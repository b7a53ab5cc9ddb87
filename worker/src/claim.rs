//! The claim loop: takes ready steps from the ready stream as slots free up, and runs each in
//! a task of its own.
//!
//! The loop never polls. It waits for a free slot (a semaphore permit), takes every other free
//! slot too, and asks for that many entries with one blocking read on a dedicated connection:
//! `XREADGROUP GROUP workers <worker id> COUNT <free slots> BLOCK <conn::BLOCK_TIMEOUT>
//! STREAMS <ready> >`. Each entry's field `t` is a msgpack [`StepTask`]; each gets a task that
//! holds one slot until the step's final report is queued, and unused slots go back at once.
//! An entry that does not decode can never run: it is logged, acknowledged and deleted so it
//! does not come back.
//!
//! Redis errors never stop the loop: it logs them, backs off (100 ms doubling to 5 s), makes a
//! new connection and tries again (recreating the consumer groups when they are gone).
//!
//! On shutdown a read in flight is not abandoned, since entries Redis delivered to an abandoned
//! read would sit unprocessed in this worker's pending list until reclaimed. Instead the read
//! is woken with `CLIENT UNBLOCK` from another connection (it then returns as if timed out),
//! and any entries it did return are run like the others before the loop ends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dagrid_shared::conn::{self, BLOCK_TIMEOUT};
use dagrid_shared::keys::{COORDINATOR_GROUP, WORKER_GROUP};
use dagrid_shared::model::{self, now_ms, StepTask};
use dagrid_shared::{ConnError, Redis};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use redis::{RedisError, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::exec;
use crate::report::Report;

/// How often a read in flight at shutdown is sent `CLIENT UNBLOCK` until it returns (the
/// unblock can arrive before the read does).
const UNBLOCK_EVERY: Duration = Duration::from_millis(100);
/// How long one `CLIENT UNBLOCK` may take.
const UNBLOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// Everything the claim loop and its step tasks share.
#[derive(Debug, Clone)]
pub(crate) struct Claimer {
    pub(crate) redis: Redis,
    pub(crate) worker_id: String,
    pub(crate) log_dir: PathBuf,
    /// One permit per slot.
    pub(crate) slots: Arc<Semaphore>,
    /// Slots running a step now, for the heartbeat.
    pub(crate) busy: Arc<AtomicUsize>,
    /// The step tasks.
    pub(crate) steps: TaskTracker,
    pub(crate) reports: mpsc::Sender<Report>,
}

/// The dedicated connection of the blocking reads and its Redis client id (for CLIENT UNBLOCK).
struct Reader {
    conn: MultiplexedConnection,
    client_id: i64,
}

/// Why a round of the loop failed.
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

impl ClaimError {
    /// True when the ready stream or its group is gone (NOGROUP), for example after Redis lost
    /// its data: the groups must be made again.
    fn is_no_group(&self) -> bool {
        let e = match self {
            ClaimError::Redis(e) | ClaimError::Conn(ConnError::Redis(e)) => e,
            ClaimError::Conn(_) => return false,
        };
        e.code() == Some("NOGROUP")
    }
}

/// Makes the consumer groups of the ready stream (workers) and the results stream
/// (coordinators) if they do not exist, and loads the Lua scripts.
pub(crate) async fn prepare(redis: &Redis) -> Result<(), ConnError> {
    let keys = redis.keys();
    for ready in keys.ready_levels() {
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
        let mut reader: Option<Reader> = None;
        let mut backoff = Backoff::new();
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break, // closed: not done by this crate
                },
            };
            let mut permits = vec![first];
            while let Ok(p) = self.slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let result = match reader.as_mut() {
                Some(r) => self.read(r, permits.len(), &shutdown).await,
                None => {
                    let connected = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        c = self.connect() => c,
                    };
                    match connected {
                        Ok(r) => {
                            let r = reader.insert(r);
                            self.read(r, permits.len(), &shutdown).await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(entries) => {
                    backoff.reset();
                    for entry in entries {
                        let permit = match permits.pop() {
                            Some(p) => p,
                            // Redis returned more than COUNT: never, but run it anyway.
                            None => match self.slots.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                        };
                        self.dispatch(entry, permit).await;
                    }
                    drop(permits);
                }
                Err(e) => {
                    drop(permits);
                    reader = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(worker.id = %self.worker_id, cause = %e, retry_in = ?delay, "cannot read ready steps from Redis; retrying");
                    if e.is_no_group() {
                        if let Err(e) = prepare(&self.redis).await {
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
        tracing::info!(worker.id = %self.worker_id, "stopped claiming steps");
    }

    /// A new dedicated connection and its client id.
    async fn connect(&self) -> Result<Reader, ClaimError> {
        let mut conn = self.redis.blocking_conn().await?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        Ok(Reader { conn, client_id })
    }

    /// One blocking read of at most `count` entries; empty when it timed out or was unblocked
    /// at shutdown.
    async fn read(
        &self,
        reader: &mut Reader,
        count: usize,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(String, StreamId)>, ClaimError> {
        if shutdown.is_cancelled() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WORKER_GROUP)
            .arg(&self.worker_id)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK_TIMEOUT.as_millis() as u64)
            .arg("STREAMS");
        let levels = self.redis.keys().ready_levels();
        for ready in &levels {
            cmd.arg(ready);
        }
        for _ in &levels {
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
                                worker.id = %self.worker_id,
                                "the ready-stream read in flight at shutdown did not return; entries it may have claimed are re-queued by the coordinator"
                            );
                            return Ok(Vec::new());
                        }
                    }
                }
            }
            reply = &mut read => reply,
        }?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| {
                        let stream = k.key;
                        k.ids.into_iter().map(move |id| (stream.clone(), id))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `CLIENT UNBLOCK <id>` from a pooled connection; best effort.
    async fn unblock(&self, client_id: i64) {
        let attempt = async {
            let mut c = self.redis.conn().await?;
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

    /// Starts a task for one ready entry, or discards an entry that does not decode.
    async fn dispatch(&self, (stream, entry): (String, StreamId), permit: OwnedSemaphorePermit) {
        let task = match entry.map.get("t") {
            Some(Value::BulkString(bytes)) => {
                model::decode::<StepTask>(bytes).map_err(|e| e.to_string())
            }
            Some(other) => Err(format!("field t is not a string: {other:?}")),
            None => Err("no field t".to_string()),
        };
        match task {
            Ok(task) => {
                let span = tracing::info_span!(
                    "step",
                    run.id = %task.run_id,
                    step = %task.step,
                    attempt = task.attempt,
                );
                self.steps.spawn(
                    self.clone()
                        .run_step(entry.id, task, permit)
                        .instrument(span),
                );
            }
            Err(reason) => {
                drop(permit);
                tracing::error!(
                    entry.id = %entry.id,
                    cause = %reason,
                    "a ready-stream entry is not a step task this worker can read; acknowledging and deleting it"
                );
                if let Err(e) = conn::ack_and_delete(
                    &self.redis,
                    &stream,
                    WORKER_GROUP,
                    std::slice::from_ref(&entry.id),
                )
                .await
                {
                    tracing::error!(entry.id = %entry.id, cause = %e, "cannot delete the unreadable entry; it stays pending");
                }
            }
        }
    }

    /// Runs one step and queues its reports; holds its slot until the final report is queued.
    async fn run_step(self, entry_id: String, task: StepTask, _slot: OwnedSemaphorePermit) {
        let _busy = Busy::enter(&self.busy);
        tracing::debug!(
            waited_ms = now_ms().saturating_sub(task.queued_ms),
            "claimed step"
        );
        let outcome = match exec::spawn(&task, &self.log_dir).await {
            Ok(running) => {
                let started = Report::started(
                    &task,
                    &self.worker_id,
                    running.started_ms(),
                    running.log_path(),
                );
                self.queue(started).await;
                running.wait().await
            }
            Err(failed) => failed,
        };
        let took_ms = outcome.finished_ms.saturating_sub(outcome.started_ms);
        if outcome.kind == model::ReportKind::Succeeded {
            tracing::debug!(took_ms, "step succeeded");
        } else {
            tracing::info!(
                exit_code = ?outcome.exit_code,
                error = outcome.error.as_deref().unwrap_or(""),
                took_ms,
                "step failed"
            );
        }
        let finished = Report::finished(&task, &self.worker_id, entry_id, outcome);
        self.queue(finished).await;
    }

    async fn queue(&self, report: Report) {
        if self.reports.send(report).await.is_err() {
            tracing::error!("the reporter has stopped; a step report is lost");
        }
    }
}

/// Counts a slot as busy while alive.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
