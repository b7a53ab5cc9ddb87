//! Retention's reads and deletions (the loop is [`crate::retention`]): deletes finished runs (succeeded, failed, aborted) by age and by count, with
//! their step log tails, their index entries and the dedup key they still hold, so Redis does
//! not grow without bound (BullMQ's lesson: finished jobs kept forever fill Redis).
//!
//! Every [`Policy::interval`] the sweep walks the three finished-status indexes
//! ([`Keys::runs_by_status`]), whose members are run ids (lexical order is creation order,
//! [`dagrid_shared::run_id`]), in batches of [`BATCH`]:
//!
//! - **Age**: only runs created before the cutoff can have finished before it, so the walk
//!   covers the ids made before the cutoff ([`run_id::made_before`]: a range per form of id);
//!   a run goes once its `finished` time is older than [`Policy::age`].
//! - **Count**: while more than [`Policy::keep`] runs are finished, the oldest by creation
//!   go, so the newest `keep` stay.
//!
//! Per batch: one pipeline reads each candidate's step names and dedup key (HKEYS, HMGET), one
//! pipeline of `retention.lua` calls deletes them. The script checks again, atomically, that
//! the run is final and past a bound (for the count, that more than `keep` runs are finished),
//! so any number of coordinator replicas can sweep at once: a run deleted by one is "gone" to
//! the others, and racing count sweeps never leave fewer than `keep` finished runs.
//!
//! Stream entries need no retention: ready entries are deleted when their final report is
//! written and results entries when applied, so the streams hold only work in flight.

use std::time::Duration;

use dagrid_shared::model::{now_ms, RunStatus};
use dagrid_shared::redis::conn::{ConnError, Redis};
use dagrid_shared::redis::fields::run_field;
use dagrid_shared::redis::keys::Keys;
use dagrid_shared::redis::scripts;
use dagrid_shared::run_id;
use redis::Value;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Runs read and deleted per pipeline.
pub(crate) const BATCH: usize = 500;
/// Most batches per bound in one sweep (50,000 runs), so one sweep never runs for long; a
/// backlog is worked off over several sweeps.
const MAX_BATCHES: usize = 100;
/// The statuses a run never leaves.
const FINAL: [RunStatus; 3] = [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Aborted];

/// What to keep.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// A finished run is deleted this long after it finished; `None`: no age bound.
    pub(crate) age: Option<Duration>,
    /// At most this many finished runs are kept, the newest by creation; `None`: no count
    /// bound.
    pub(crate) keep: Option<u64>,
    /// Time between two sweeps; the first comes one interval after start.
    pub(crate) interval: Duration,
}

impl Policy {
    /// The policy of [`crate::Config`]: a zero age or count disables that bound.
    pub(crate) fn from_config(config: &crate::Config) -> Self {
        Self {
            age: (!config.retention_age.is_zero()).then_some(config.retention_age),
            keep: (config.retention_count > 0).then_some(config.retention_count),
            interval: config.retention_interval.max(Duration::from_millis(10)),
        }
    }
}

impl super::Store {
    /// One retention sweep ([`sweep`]) of this namespace.
    pub(crate) async fn sweep_retention(
        &self,
        policy: &Policy,
        shutdown: &CancellationToken,
    ) -> Result<u64, ConnError> {
        sweep(&self.redis, policy, shutdown).await
    }

    /// One step of the dedup holders walk ([`sweep_holders`]) of this namespace.
    pub(crate) async fn sweep_dedup_holders(
        &self,
        cursor: u64,
        shutdown: &CancellationToken,
    ) -> Result<(u64, u64), ConnError> {
        sweep_holders(&self.redis, cursor, shutdown).await
    }
}

/// One sweep: the age bound, then the count bound. Returns how many runs it deleted.
pub(crate) async fn sweep(
    redis: &Redis,
    policy: &Policy,
    shutdown: &CancellationToken,
) -> Result<u64, ConnError> {
    let keys = redis.keys();
    let cutoff = policy
        .age
        .map(|age| now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
        .unwrap_or(0);
    let bounds = Bounds {
        cutoff_ms: cutoff,
        keep: policy.keep.unwrap_or(0),
    };
    let mut deleted = 0;
    if bounds.cutoff_ms > 0 {
        let ranges = run_id::made_before(bounds.cutoff_ms);
        for status in FINAL {
            let index = keys.runs_by_status(status.as_str());
            for (min, below) in &ranges {
                let mut from = min.clone();
                for _ in 0..MAX_BATCHES {
                    if shutdown.is_cancelled() {
                        return Ok(deleted);
                    }
                    let mut c = redis.conn().await?;
                    let ids: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&index)
                        .arg(&from)
                        .arg(below)
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(BATCH)
                        .query_async(&mut *c)
                        .await?;
                    drop(c);
                    let Some(last) = ids.last() else { break };
                    from = format!("({last}");
                    deleted += delete(redis, &ids, bounds).await?.deleted;
                    if ids.len() < BATCH {
                        break;
                    }
                }
            }
        }
    }
    if bounds.keep > 0 {
        for _ in 0..MAX_BATCHES {
            if shutdown.is_cancelled() {
                return Ok(deleted);
            }
            let ids = oldest_beyond(redis, bounds.keep).await?;
            if ids.is_empty() {
                break;
            }
            let outcome = delete(redis, &ids, bounds).await?;
            deleted += outcome.deleted;
            if outcome.deleted + outcome.gone == 0 {
                // Nothing was past the bound any more (another replica swept first).
                break;
            }
        }
    }
    Ok(deleted)
}

/// The bounds passed to `retention.lua`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Runs that finished before this time (ms) go; 0: no age bound.
    cutoff_ms: u64,
    /// Runs go while more than this many are finished; 0: no count bound.
    keep: u64,
}

/// What one batch did.
#[derive(Debug, Default)]
struct Outcome {
    /// Runs deleted.
    deleted: u64,
    /// Runs whose hash was already gone (stale index entries removed).
    gone: u64,
}

/// The oldest finished runs (by id, across the finished-status indexes) beyond the newest
/// `keep`, at most [`BATCH`].
async fn oldest_beyond(redis: &Redis, keep: u64) -> Result<Vec<String>, ConnError> {
    let keys = redis.keys();
    let indexes: Vec<String> = FINAL
        .iter()
        .map(|s| keys.runs_by_status(s.as_str()))
        .collect();
    let mut c = redis.conn().await?;
    let mut count = redis::pipe();
    for index in &indexes {
        count.cmd("ZCARD").arg(index);
    }
    let sizes: Vec<u64> = count.query_async(&mut *c).await?;
    let excess = sizes.iter().sum::<u64>().saturating_sub(keep);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let n = usize::try_from(excess).unwrap_or(BATCH).min(BATCH);
    let mut heads = redis::pipe();
    for index in &indexes {
        heads
            .cmd("ZRANGE")
            .arg(index)
            .arg("-")
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(n);
    }
    let heads: Vec<Vec<String>> = heads.query_async(&mut *c).await?;
    let mut ids: Vec<String> = heads.into_iter().flatten().collect();
    ids.sort_unstable();
    ids.truncate(n);
    Ok(ids)
}

/// Deletes the runs of `ids` that are past a bound: reads their step names and dedup keys in
/// one pipeline, then runs `retention.lua` for each in another.
async fn delete(redis: &Redis, ids: &[String], bounds: Bounds) -> Result<Outcome, ConnError> {
    if ids.is_empty() {
        return Ok(Outcome::default());
    }
    let keys = redis.keys();
    let mut read = redis::pipe();
    for id in ids {
        read.cmd("HKEYS").arg(keys.run(id));
        read.cmd("HMGET")
            .arg(keys.run(id))
            .arg(run_field::DAG)
            .arg(run_field::DEDUP);
    }
    let mut c = redis.conn().await?;
    let replies: Vec<Value> = read.query_async(&mut *c).await?;
    drop(c);
    let mut calls = redis::pipe();
    let mut replies = replies.into_iter();
    for id in ids {
        let (Some(fields), Some(named)) = (replies.next(), replies.next()) else {
            break;
        };
        let fields: Vec<String> =
            redis::from_redis_value(fields).map_err(redis::RedisError::from)?;
        let named: (Option<String>, Option<String>) =
            redis::from_redis_value(named).map_err(redis::RedisError::from)?;
        calls.invoke_script(&deletion(keys, id, &fields, named, bounds));
    }
    let results = redis.script_pipeline(&calls).await?;
    let mut outcome = Outcome::default();
    for r in results {
        match r {
            Value::Int(1) => outcome.deleted += 1,
            Value::Int(2) => outcome.gone += 1,
            _ => {}
        }
    }
    debug!(
        candidates = ids.len(),
        deleted = outcome.deleted,
        gone = outcome.gone,
        "retention batch"
    );
    Ok(outcome)
}

/// Dedup holders read per `HSCAN` call of [`sweep_holders`].
const HOLDERS_BATCH: usize = 500;
/// Most `HSCAN` calls per sweep (10,000 holders), so a sweep stays short; the walk goes on
/// from its cursor at the next sweep.
const HOLDERS_BATCHES: usize = 20;

/// One step of the walk over the dedup holders hash ([`Keys::dedup_holders`]) from `cursor`
/// (an `HSCAN` cursor; 0: the start): releases each key whose holder has finished or is gone
/// (`release_holder.lua`, which checks again atomically). A release of the previous version
/// leaves such a field behind when it finishes a run this version queued: it knows neither the
/// 12-byte fields nor (before that) the hash. Returns the cursor to go on from (0 once the walk
/// went round) and how many keys it released.
pub(crate) async fn sweep_holders(
    redis: &Redis,
    mut cursor: u64,
    shutdown: &CancellationToken,
) -> Result<(u64, u64), ConnError> {
    let keys = redis.keys();
    let holders = keys.dedup_holders();
    let mut released = 0;
    for _ in 0..HOLDERS_BATCHES {
        if shutdown.is_cancelled() {
            break;
        }
        let mut c = redis.conn().await?;
        let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(&holders)
            .arg(cursor)
            .arg("COUNT")
            .arg(HOLDERS_BATCH)
            .query_async(&mut *c)
            .await?;
        let pairs: Vec<(&[u8], String)> = flat
            .chunks_exact(2)
            .map(|p| (p[0].as_slice(), String::from_utf8_lossy(&p[1]).into_owned()))
            .collect();
        if pairs.is_empty() {
            cursor = next;
            if cursor == 0 {
                break;
            }
            continue;
        }
        let mut read = redis::pipe();
        for (_, id) in &pairs {
            read.cmd("HGET").arg(keys.run(id)).arg(run_field::STATUS);
        }
        let statuses: Vec<Option<String>> = read.query_async(&mut *c).await?;
        drop(c);
        let mut calls = redis::pipe();
        for ((field, id), status) in pairs.iter().zip(statuses) {
            let done = status.and_then(|s| s.parse::<RunStatus>().ok());
            if done.is_none_or(|s| FINAL.contains(&s)) {
                let mut inv = scripts::RELEASE_HOLDER.prepare_invoke();
                inv.key(&holders).key(keys.run(id)).arg(*field).arg(id);
                calls.invoke_script(&inv);
            }
        }
        if !calls.is_empty() {
            for r in redis.script_pipeline(&calls).await? {
                if r == Value::Int(1) {
                    released += 1;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok((cursor, released))
}

/// The `retention.lua` call for one run, given its hash's field names and its `dag` and
/// `dedup` fields.
fn deletion<'a>(
    keys: &Keys,
    id: &str,
    fields: &[String],
    (dag, dedup): (Option<String>, Option<String>),
    bounds: Bounds,
) -> redis::ScriptInvocation<'a> {
    let mut inv = scripts::RETENTION.prepare_invoke();
    let by_dag = dag.map_or_else(
        || keys.runs_by_status(FINAL[0].as_str()),
        |d| keys.runs_by_dag(&d),
    );
    inv.key(keys.run(id)).key(by_dag);
    for status in FINAL {
        inv.key(keys.runs_by_status(status.as_str()));
    }
    // Only a key of this namespace may be passed (one hash tag, one cluster slot).
    let named = dedup
        .as_deref()
        .map(|f| keys.dedup_named(f))
        .filter(|k| k.starts_with(keys.prefix()));
    inv.key(named.clone().unwrap_or_else(|| keys.run(id)));
    // The field as read, which named the key passed ('' when none was).
    let field = named.and(dedup).unwrap_or_default();
    for field in fields {
        if let Some(step) = field.strip_prefix(run_field::STEP_PREFIX) {
            inv.key(keys.log_tail(id, step)).key(keys.fan(id, step));
        }
    }
    inv.key(keys.children(id));
    inv.arg(id)
        .arg(bounds.cutoff_ms)
        .arg(bounds.keep)
        .arg(field);
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn zero_disables_a_bound() {
        let config = crate::Config {
            retention_age: Duration::ZERO,
            retention_count: 0,
            ..Default::default()
        };
        let p = Policy::from_config(&config);
        assert!(p.age.is_none() && p.keep.is_none());
        let d = Policy::from_config(&crate::Config::default());
        assert_eq!(d.age, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(d.keep, Some(10_000));
        assert_eq!(d.interval, Duration::from_secs(60));
    }
}
