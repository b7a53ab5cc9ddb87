//! The reconciler's reads and repairs ([`crate::reconcile`]): pages of the status indexes,
//! whether a report is still being applied, whether the entries, retries and waiting-set
//! members that a run's state promises exist, and the two repairs (a `lost` report, a run put
//! back in the delayed set).

use dagrid_shared::model::{self, now_ms, RunStatus, StepReport};
use dagrid_shared::redis::fields::{delayed_member, run_field, stream_field};
use redis::Value;

use super::{encoding, Store, StoreResult};

/// One thing a run's state says Redis holds, checked by [`Store::missing`].
#[derive(Debug, Clone)]
pub(crate) enum Probe<'a> {
    /// A queued or running step's ready-stream entry (`XRANGE <ready> <id> <id>`): on priority
    /// level `priority`, with this entry id.
    Entry {
        /// The run's priority level.
        priority: u8,
        /// The step's worker selector (canonical; empty: none): its own, else the run's
        /// ([`dagrid_shared::dag::Dag::selector_of`]).
        selector: std::borrow::Cow<'a, str>,
        /// The entry id.
        entry: &'a str,
    },
    /// A retrying step's retry in the delayed set (`ZSCORE`).
    Retry {
        /// The run id.
        run: &'a str,
        /// The step name.
        step: &'a str,
    },
    /// A running call step's fan hash, for the step's attempt (`HGET <fan> tok`): it is what
    /// the step's children report to; without it the step would wait forever.
    Fan {
        /// The run id.
        run: &'a str,
        /// The step name.
        step: &'a str,
        /// The attempt's fencing token.
        token: &'a str,
    },
    /// A run waiting for admission in its queue's waiting set, the delayed set, or its queue's
    /// active set (`ZSCORE`, `ZSCORE`, `SISMEMBER`).
    Held {
        /// The run id.
        run: &'a str,
        /// Its queue.
        queue: &'a str,
    },
}

impl Store {
    /// Up to `limit` run ids of the `status` index after `after` (ids sort by time,
    /// [`dagrid_shared::run_id`]), oldest first (`ZRANGE … BYLEX LIMIT`).
    pub(crate) async fn runs_after(
        &self,
        status: RunStatus,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let index = self.redis.keys().runs_by_status(status.as_str());
        Ok(self.index_page_after(&index, after, limit).await?)
    }

    /// True when a report has been pending in the coordinators' group for a second or more
    /// (`XPENDING <results> coordinators IDLE 1000 - + 1`; no group yet: false).
    pub(crate) async fn reports_in_flight(&self) -> StoreResult<bool> {
        let mut c = self.redis.conn().await?;
        let pending: Vec<Value> = match redis::cmd("XPENDING")
            .arg(self.redis.keys().results())
            .arg(dagrid_shared::redis::keys::COORDINATOR_GROUP)
            .arg("IDLE")
            .arg(1000)
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(&mut *c)
            .await
        {
            Ok(p) => p,
            Err(e) if e.code() == Some("NOGROUP") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(!pending.is_empty())
    }

    /// For each probe, whether what it names is gone (for [`Probe::Held`]: the run is in
    /// none of the three sets), in one pipeline.
    pub(crate) async fn missing(&self, probes: &[Probe<'_>]) -> StoreResult<Vec<bool>> {
        if probes.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        for probe in probes {
            match *probe {
                Probe::Entry {
                    priority,
                    ref selector,
                    entry,
                } => {
                    pipe.cmd("XRANGE")
                        .arg(keys.ready_of(priority, selector))
                        .arg(entry)
                        .arg(entry);
                }
                Probe::Retry { run, step } => {
                    pipe.cmd("ZSCORE")
                        .arg(keys.delayed())
                        .arg(delayed_member::retry(run, step));
                }
                Probe::Fan { run, step, .. } => {
                    pipe.cmd("HGET")
                        .arg(keys.fan(run, step))
                        .arg(dagrid_shared::redis::fields::fan_field::TOKEN);
                }
                Probe::Held { run, queue } => {
                    pipe.cmd("ZSCORE").arg(keys.waiting(queue)).arg(run);
                    pipe.cmd("ZSCORE").arg(keys.delayed()).arg(run);
                    pipe.cmd("SISMEMBER").arg(keys.active(queue)).arg(run);
                }
            }
        }
        let mut c = self.redis.conn().await?;
        let replies: Vec<Value> = pipe.query_async(&mut *c).await?;
        let mut replies = replies.into_iter();
        Ok(probes
            .iter()
            .map(|probe| match probe {
                Probe::Entry { .. } => {
                    matches!(replies.next(), Some(Value::Array(a)) if a.is_empty())
                }
                Probe::Retry { .. } => matches!(replies.next(), Some(Value::Nil)),
                Probe::Fan { token, .. } => !matches!(
                    replies.next(),
                    Some(Value::BulkString(t)) if t == token.as_bytes()
                ),
                Probe::Held { .. } => {
                    let waiting = replies.next();
                    let delayed = replies.next();
                    let active = replies.next();
                    matches!(waiting, Some(Value::Nil))
                        && matches!(delayed, Some(Value::Nil))
                        && matches!(active, Some(Value::Int(0)))
                }
            })
            .collect())
    }

    /// Adds `report` to the results stream (`XADD <results> * r <msgpack>`), for the
    /// orchestrator to apply like a worker's.
    pub(crate) async fn add_report(&self, report: &StepReport) -> StoreResult<()> {
        let mut c = self.redis.conn().await?;
        redis::cmd("XADD")
            .arg(self.redis.keys().results())
            .arg("*")
            .arg(stream_field::REPORT)
            .arg(model::encode(report).map_err(encoding)?)
            .query_async::<()>(&mut *c)
            .await?;
        Ok(())
    }

    /// Puts a run that waits for admission back in the delayed set as due now (`ZADD NX`, and
    /// `HDEL` of its due time, in one MULTI) and wakes the timer loop, whose PROMOTE admits it.
    pub(crate) async fn readmit(&self, run_id: &str) -> StoreResult<()> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(keys.delayed())
            .arg("NX")
            .arg(now_ms())
            .arg(run_id)
            .ignore()
            .cmd("HDEL")
            .arg(keys.run(run_id))
            .arg(run_field::DUE)
            .ignore()
            .query_async::<()>(&mut *c)
            .await?;
        self.delayed_added.notify_one();
        Ok(())
    }
}
