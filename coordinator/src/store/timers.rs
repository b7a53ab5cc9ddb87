//! Delayed work falling due, for the timer loop ([`crate::timers`]): delayed runs promoted
//! to their queue, step retries queued again, run deadlines (DAG `timeoutSec`) and automatic
//! retries of failed runs (`retry_policy`). Everything due lives in the delayed ZSET
//! ([`dagrid_shared::redis::keys::Keys::delayed`]), never in this process.

use std::collections::{BTreeMap, BTreeSet};

use dagrid_shared::dag::{Dag, Priority};
use dagrid_shared::model::{self, RunStatus};
use dagrid_shared::redis::conn::ConnError;
use dagrid_shared::redis::fields::delayed_member::{self, Due};
use dagrid_shared::redis::fields::{run_field, wait_score};
use dagrid_shared::redis::scripts;
use dagrid_shared::run_id;
use redis::Value;

use super::{Store, StoreError, StoreResult};
use crate::plan;

/// Due delayed runs promoted per pass.
const PROMOTE_BATCH: usize = 256;

impl Store {
    /// Promotes the delayed runs due by `now_ms` (PROMOTE scripts, pipelined), then admits
    /// waiting runs of the queues where some had to wait. Returns the number promoted and the
    /// due time of the next delayed run, if any.
    pub(crate) async fn promote_due(&self, now_ms: u64) -> StoreResult<(usize, Option<u64>)> {
        let keys = self.redis().keys();
        let mut c = self.redis().conn().await?;
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.delayed())
            .arg("-inf")
            .arg(now_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(PROMOTE_BATCH)
            .query_async(&mut *c)
            .await?;
        let mut ids = Vec::new();
        let mut retries = Vec::new();
        let mut deadlines = Vec::new();
        let mut run_retries = Vec::new();
        for member in &members {
            match delayed_member::parse(member) {
                Due::Run(id) => ids.push(id.to_string()),
                Due::Retry(run, step) => retries.push((member.clone(), run, step)),
                Due::Deadline(run) => deadlines.push((member.clone(), run)),
                Due::RunRetry(run) => run_retries.push((member.clone(), run)),
            }
        }
        let mut promoted = self.retry_due(&retries).await?;
        for (member, run) in deadlines {
            self.deadline_due(&member, run).await?;
            promoted += 1;
        }
        for (member, run) in run_retries {
            self.run_retry_due(&member, run).await?;
            promoted += 1;
        }
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(keys.run(id))
                    .arg(run_field::DAG)
                    .arg(run_field::QUEUE)
                    .arg(run_field::DAG_LIMIT)
                    .arg(run_field::PRIORITY)
                    .arg(run_field::CREATED)
                    .arg(run_field::SELECTOR)
                    .arg(run_field::SPEC);
            }
            type Meta = (
                Option<String>,
                Option<String>,
                Option<u32>,
                Option<u8>,
                Option<u64>,
                Option<String>,
                Option<String>,
            );
            let meta: Vec<Meta> = pipe.query_async(&mut *c).await?;
            drop(c);
            let mut pipe = redis::pipe();
            let mut queues = Vec::new();
            let mut limits: BTreeMap<String, u32> = BTreeMap::new();
            for (id, (dag, queue, dlim, pri, created, selector, spec)) in ids.iter().zip(meta) {
                let dag = dag.unwrap_or_default();
                let queue = queue.unwrap_or_else(|| dag.clone());
                let priority = pri.and_then(Priority::new).unwrap_or_default();
                let limit = match limits.get(&queue) {
                    Some(n) => *n,
                    None => {
                        let n = self.queue_limit(&queue).await?;
                        limits.insert(queue.clone(), n);
                        n
                    }
                };
                let mut inv = scripts::PROMOTE.prepare_invoke();
                inv.key(keys.delayed())
                    .key(keys.run(id))
                    .key(keys.ready_of(priority.get(), selector.as_deref().unwrap_or("")))
                    .key(keys.waiting(&queue))
                    .key(keys.active(&queue))
                    .key(keys.active_dag(&dag))
                    .key(keys.waiting_queues())
                    .key(keys.paused());
                for stream in self.step_streams(spec.as_deref(), priority).await? {
                    inv.key(stream);
                }
                inv.arg(id)
                    .arg(&queue)
                    .arg(limit)
                    .arg(dlim.unwrap_or(0))
                    .arg(wait_score(
                        priority,
                        created.or_else(|| run_id::created_ms(id)).unwrap_or(now_ms),
                    ));
                pipe.invoke_script(&inv);
                queues.push(queue);
            }
            let replies = self.script_pipeline(&pipe).await?;
            let mut to_pump = BTreeSet::new();
            for (reply, queue) in replies.into_iter().zip(queues) {
                match reply {
                    Value::BulkString(b) if b == b"admitted" => promoted += 1,
                    Value::BulkString(b) if b == b"waiting" => {
                        promoted += 1;
                        to_pump.insert(queue);
                    }
                    _ => {}
                }
            }
            for q in to_pump {
                self.admit_waiting(&q).await?;
            }
            c = self.redis().conn().await?;
        }
        let next: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.delayed())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut *c)
            .await?;
        Ok((promoted, next.first().map(|(_, s)| *s as u64)))
    }
}

impl Store {
    /// Queues the next attempts of the due retries `(member, run id, step)` (RETRY_DUE
    /// scripts, pipelined). Returns how many were queued.
    async fn retry_due(&self, due: &[(String, &str, &str)]) -> Result<usize, ConnError> {
        if due.is_empty() {
            return Ok(0);
        }
        let keys = self.redis().keys();
        let mut c = self.redis().conn().await?;
        let mut pipe = redis::pipe();
        for (_, run, _) in due {
            pipe.cmd("HMGET")
                .arg(keys.run(run))
                .arg(run_field::PRIORITY)
                .arg(run_field::SELECTOR)
                .arg(run_field::SPEC);
        }
        type Lane = (Option<u8>, Option<String>, Option<String>);
        let lanes: Vec<Lane> = pipe.query_async(&mut *c).await?;
        drop(c);
        let mut pipe = redis::pipe();
        for ((member, run, step), (pri, selector, spec)) in due.iter().zip(lanes) {
            let priority = pri.and_then(Priority::new).unwrap_or_default();
            // The step's own selector when it has one (a DAG version without step-level
            // selectors, or an unknown one: the run's).
            let selector = match spec.as_deref() {
                Some(spec) => match self.spec(spec).await? {
                    Some(dag) if dag.has_step_selectors() => Some(dag.selector_of(step)),
                    _ => selector,
                },
                None => selector,
            };
            let mut inv = scripts::RETRY_DUE.prepare_invoke();
            inv.key(keys.delayed())
                .key(keys.run(run))
                .key(keys.ready_of(priority.get(), selector.as_deref().unwrap_or("")))
                .key(keys.events())
                .arg(member)
                .arg(*step)
                .arg(*run)
                .arg(dagrid_shared::redis::fields::EVENTS_CAP);
            pipe.invoke_script(&inv);
        }
        let replies = self.script_pipeline(&pipe).await?;
        Ok(replies
            .iter()
            .filter(|r| matches!(r, Value::BulkString(b) if b == b"queued"))
            .count())
    }

    /// Ends a run whose DAG `timeoutSec` passed (failed; its running steps stopped), then
    /// takes its deadline out of the delayed set (the stop does too; this covers a run that
    /// finished or vanished meanwhile).
    async fn deadline_due(&self, member: &str, run_id: &str) -> StoreResult<()> {
        let why = |dag: &Dag| {
            format!(
                "the run exceeded its DAG timeoutSec of {}",
                humantime::format_duration(std::time::Duration::from_millis(
                    dag.timeout_ms.unwrap_or(0)
                ))
            )
        };
        match crate::store::stop::stop_run(self, run_id, RunStatus::Failed, why).await {
            Ok(crate::store::stop::StopOutcome::Stopped) => {
                tracing::info!(run.id = %run_id, "run exceeded its DAG timeoutSec; its steps were stopped");
            }
            Ok(crate::store::stop::StopOutcome::Finished(_)) | Err(StoreError::NotFound { .. }) => {
            }
            Err(e) => return Err(e),
        }
        let mut c = self.redis().conn().await?;
        redis::cmd("ZREM")
            .arg(self.redis().keys().delayed())
            .arg(member)
            .query_async::<()>(&mut *c)
            .await
            .map_err(ConnError::from)?;
        Ok(())
    }
}

impl Store {
    /// Retries a failed run automatically under its DAG's `retry_policy` (Dagu's scheduler
    /// retry of a failed run): [`plan::auto_retry`] applied as one `apply_transition` call that
    /// also removes the delayed member, so replicas racing on it retry the run once (the loser's
    /// version check fails; it reads the run again and finds it running). A member whose run is
    /// gone, no longer failed (retried by hand) or has nothing to run again is removed with
    /// its `retryat` field, by `drop_run_retry.lua`, unless it was scheduled again meanwhile
    /// (its due time then lies ahead). After 16 lost compare-and-sets the member stays due, for
    /// the next pass.
    async fn run_retry_due(&self, member: &str, run_id: &str) -> StoreResult<()> {
        match self
            .apply_cas(run_id, |run, dag| {
                plan::auto_retry(dag, run, model::now_ms()).ok_or(())
            })
            .await
        {
            Ok(Ok(applied)) => {
                tracing::info!(
                    run.id = %run_id, retry = applied.run.auto_retries + 1,
                    steps = applied.transition.tasks.len(),
                    "failed run retried automatically (retry_policy)"
                );
                return Ok(());
            }
            Err(StoreError::Conflict { rounds, .. }) => {
                tracing::warn!(run.id = %run_id, rounds, "automatic retry lost its compare-and-sets; next pass");
                return Ok(());
            }
            // Gone, its DAG version gone, or nothing to run again: drop the member.
            Ok(Err(())) | Err(StoreError::NotFound { .. } | StoreError::Corrupt(_)) => {}
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
        }
        let keys = self.redis().keys();
        let mut c = self.redis().conn().await?;
        scripts::DROP_RUN_RETRY
            .key(keys.delayed())
            .key(keys.run(run_id))
            .arg(member)
            .arg(model::now_ms())
            .arg(run_field::RUN_RETRY_AT)
            .invoke_async::<i64>(&mut *c)
            .await?;
        Ok(())
    }
}
