//! The cron scheduler's state in Redis ([`crate::scheduler`]): the last fired slot of each DAG
//! ([`Keys::schedule_state`]), its pending `latest` slot ([`Keys::schedule_pending`], through
//! `pending_slot.lua`), the latest `schedule.stop` / `schedule.restart` slot acted on
//! ([`Keys::schedule_actions`]), and the run reads its decisions need.
//!
//! [`Keys::schedule_state`]: dagrid_shared::redis::keys::Keys::schedule_state
//! [`Keys::schedule_pending`]: dagrid_shared::redis::keys::Keys::schedule_pending
//! [`Keys::schedule_actions`]: dagrid_shared::redis::keys::Keys::schedule_actions

use dagrid_shared::model::RunStatus;
use dagrid_shared::redis::fields::run_field;
use dagrid_shared::redis::scripts;
use dagrid_shared::run_id;

use super::{Store, StoreResult};

/// A `schedule.stop` or `schedule.restart` slot of a DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `schedule.stop`.
    Stop,
    /// `schedule.restart`.
    Restart,
}

impl Action {
    /// The field of [`Keys::schedule_actions`] that keeps this action's latest slot.
    ///
    /// [`Keys::schedule_actions`]: dagrid_shared::redis::keys::Keys::schedule_actions
    fn field(self, dag: &str) -> String {
        match self {
            Action::Stop => format!("stop:{dag}"),
            Action::Restart => format!("restart:{dag}"),
        }
    }
}

/// What the scheduler keeps of one DAG (slots in ms since the Unix epoch).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// The last fired start slot.
    pub(crate) fired: Option<u64>,
    /// The `overlapPolicy: latest` slot waiting for the DAG's active run to end.
    pub(crate) pending: Option<u64>,
    /// The latest `schedule.stop` slot acted on.
    pub(crate) stopped: Option<u64>,
    /// The latest `schedule.restart` slot acted on.
    pub(crate) restarted: Option<u64>,
}

/// What `pending_slot.lua` does with a DAG's pending slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotOp {
    /// Keep this slot pending (unless a newer one is).
    Set,
    /// Settle this slot (and any older pending one).
    Clear,
}

impl SlotOp {
    fn as_str(self) -> &'static str {
        match self {
            SlotOp::Set => "set",
            SlotOp::Clear => "clear",
        }
    }
}

/// The newest run of a DAG, as `skip_if_successful` reads it.
#[derive(Debug, Clone)]
pub(crate) struct Newest {
    /// Its status (`None`: its record is gone or unreadable).
    pub(crate) status: Option<RunStatus>,
    /// Its cron slot (ms), for a scheduled run.
    pub(crate) slot_ms: Option<u64>,
    /// When it was created (ms).
    pub(crate) created_ms: Option<u64>,
}

/// The runs of a DAG that a `schedule.stop` or `schedule.restart` slot may stop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stoppable {
    /// Run ids: the queued and running ones first, then the failed ones.
    pub(crate) ids: Vec<String>,
    /// How many of `ids` are queued or running.
    pub(crate) active: usize,
    /// Per id: created (ms) and, for a failed run, when its automatic retry is due (ms).
    pub(crate) fields: Vec<(Option<u64>, Option<u64>)>,
}

impl Store {
    /// The [`Marks`] of each of `dags`, in order: three HMGET in one pipeline.
    pub(crate) async fn schedule_marks(&self, dags: &[&str]) -> StoreResult<Vec<Marks>> {
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        let mut get = redis::cmd("HMGET");
        get.arg(keys.schedule_state());
        let mut pending = redis::cmd("HMGET");
        pending.arg(keys.schedule_pending());
        let mut acted = redis::cmd("HMGET");
        acted.arg(keys.schedule_actions());
        for dag in dags {
            get.arg(*dag);
            pending.arg(*dag);
            acted
                .arg(Action::Stop.field(dag))
                .arg(Action::Restart.field(dag));
        }
        pipe.add_command(get)
            .add_command(pending)
            .add_command(acted);
        type Lasts = (Vec<Option<u64>>, Vec<Option<u64>>, Vec<Option<u64>>);
        let mut c = self.redis.conn().await?;
        let (last, pending, acted): Lasts = pipe.query_async(&mut *c).await?;
        Ok((0..dags.len())
            .map(|i| Marks {
                fired: last.get(i).copied().flatten(),
                pending: pending.get(i).copied().flatten(),
                stopped: acted.get(2 * i).copied().flatten(),
                restarted: acted.get(2 * i + 1).copied().flatten(),
            })
            .collect())
    }

    /// Sets or clears pending slots (`pending_slot.lua` per `(dag, op, slot)`), in one
    /// pipeline; nothing is sent for an empty list.
    pub(crate) async fn pending_slots(&self, ops: &[(&str, SlotOp, u64)]) -> StoreResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        for (dag, op, slot) in ops {
            let mut inv = scripts::PENDING_SLOT.prepare_invoke();
            inv.key(keys.schedule_pending())
                .arg(*dag)
                .arg(op.as_str())
                .arg(*slot);
            pipe.invoke_script(&inv);
        }
        self.script_pipeline(&pipe).await?;
        Ok(())
    }

    /// Records each DAG's last fired slot (`HSET` per DAG, in one pipeline).
    pub(crate) async fn record_fired(&self, fired: &[(String, u64)]) -> StoreResult<()> {
        if fired.is_empty() {
            return Ok(());
        }
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        for (dag, slot) in fired {
            pipe.hset(keys.schedule_state(), dag, slot).ignore();
        }
        let mut c = self.redis.conn().await?;
        pipe.query_async::<()>(&mut *c).await?;
        Ok(())
    }

    /// Records `slot` as the latest `action` slot acted on for `dag` (`HSET`).
    pub(crate) async fn record_action(
        &self,
        action: Action,
        dag: &str,
        slot: u64,
    ) -> StoreResult<()> {
        let mut c = self.redis.conn().await?;
        redis::cmd("HSET")
            .arg(self.redis.keys().schedule_actions())
            .arg(action.field(dag))
            .arg(slot)
            .query_async::<()>(&mut *c)
            .await?;
        Ok(())
    }

    /// A run's status and cron slot (`HMGET`); `(None, None)` when it does not exist.
    pub(crate) async fn status_and_slot(
        &self,
        run_id: &str,
    ) -> StoreResult<(Option<RunStatus>, Option<u64>)> {
        let mut c = self.redis.conn().await?;
        let (status, slot): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.redis.keys().run(run_id))
            .arg(run_field::STATUS)
            .arg(run_field::SLOT)
            .query_async(&mut *c)
            .await?;
        Ok((status.and_then(|s| s.parse().ok()), slot))
    }

    /// The newest run of `dag` (its runs index, `ZRANGE … BYLEX REV LIMIT 0 1`, then `HMGET`
    /// of its status, slot and creation time); `None` when the DAG has no run.
    pub(crate) async fn newest_run(&self, dag: &str) -> StoreResult<Option<Newest>> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        let newest: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.runs_by_dag(dag))
            .arg("+")
            .arg("-")
            .arg("BYLEX")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut *c)
            .await?;
        let Some(id) = newest.first() else {
            return Ok(None);
        };
        let (status, slot_ms, created_ms): (Option<String>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(keys.run(id))
                .arg(run_field::STATUS)
                .arg(run_field::SLOT)
                .arg(run_field::CREATED)
                .query_async(&mut *c)
                .await?;
        Ok(Some(Newest {
            status: status.and_then(|s| s.parse().ok()),
            slot_ms,
            created_ms: created_ms.or_else(|| run_id::created_ms(id)),
        }))
    }

    /// The queued, running and failed runs of `dag` (`ZINTER` of the status and DAG indexes,
    /// one pipeline), then their creation and run-retry times (`HMGET` each, one pipeline).
    pub(crate) async fn stoppable_runs(&self, dag: &str) -> StoreResult<Stoppable> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        let mut pipe = redis::pipe();
        for status in [RunStatus::Queued, RunStatus::Running, RunStatus::Failed] {
            pipe.cmd("ZINTER")
                .arg(2)
                .arg(keys.runs_by_status(status.as_str()))
                .arg(keys.runs_by_dag(dag));
        }
        type Ids = (Vec<String>, Vec<String>, Vec<String>);
        let (queued, running, failed): Ids = pipe.query_async(&mut *c).await?;
        let active = queued.len() + running.len();
        let ids: Vec<String> = queued.into_iter().chain(running).chain(failed).collect();
        let mut fields = Vec::new();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(keys.run(id))
                    .arg(run_field::CREATED)
                    .arg(run_field::RUN_RETRY_AT);
            }
            let read: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut *c).await?;
            fields = ids
                .iter()
                .zip(read)
                .map(|(id, (created, retry_at))| {
                    (created.or_else(|| run_id::created_ms(id)), retry_at)
                })
                .collect();
        }
        Ok(Stoppable {
            ids,
            active,
            fields,
        })
    }
}
