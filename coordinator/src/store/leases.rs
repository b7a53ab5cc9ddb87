//! The reaper's reads and writes ([`crate::reaper`]): workers' pending entries on the ready
//! streams (their leases), their heartbeats, the clients connected to Redis, and the two
//! scripts that take a dead worker's work back (`reclaim.lua`) and forget its consumer
//! (`delete_consumer.lua`).

use std::collections::{BTreeMap, BTreeSet};

use dagrid_shared::model::{self, Heartbeat, StepReport, StepTask};
use dagrid_shared::redis::keys::{REAPER_CONSUMER, WORKER_GROUP};
use dagrid_shared::redis::{conn, scripts};
use redis::Value;
use tracing::debug;

use super::{encoding, Store, StoreResult};

/// Entries listed per XPENDING call.
const PAGE: usize = 200;

/// One pending entry of a worker, idle for at least the time asked.
#[derive(Debug, Clone)]
pub(crate) struct Idle {
    /// The ready stream (priority level) holding it.
    pub(crate) level: String,
    /// Its entry id.
    pub(crate) id: String,
    /// The consumer (worker id) it is pending for.
    pub(crate) owner: String,
    /// How long it has been idle (ms).
    pub(crate) idle_ms: u64,
}

/// What Redis holds of a worker's liveness.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// Its score in the workers ZSET: its last heartbeat (ms since the Unix epoch).
    pub(crate) last_ms: Option<f64>,
    /// Its heartbeat key, until it expires.
    pub(crate) heartbeat: Option<Heartbeat>,
}

/// The reply to `CLIENT LIST TYPE normal`.
#[derive(Debug, Clone)]
pub(crate) enum Clients {
    /// The names of the connected normal clients (empty names left out).
    Names(BTreeSet<String>),
    /// Redis refuses the command (some managed services rename or forbid it): why.
    Refused(String),
}

/// A consumer of the workers' group on one ready stream (`XINFO CONSUMERS`).
#[derive(Debug, Clone)]
pub(crate) struct Consumer {
    /// The ready stream.
    pub(crate) level: String,
    /// The consumer's name (a worker id).
    pub(crate) name: String,
    /// How many entries it holds.
    pub(crate) pending: i64,
    /// Since its last read or claim (ms).
    pub(crate) idle_ms: u64,
}

/// One entry to take back from its dead owner with `reclaim.lua`.
#[derive(Debug, Clone)]
pub(crate) struct Reclaim<'a> {
    /// The entry.
    pub(crate) entry: &'a Idle,
    /// The least idle time (ms) the script checks again.
    pub(crate) least_idle_ms: u64,
    /// How old the owner's heartbeat must be (ms; 0: any).
    pub(crate) silent_ms: u64,
    /// The `lost` report the script adds to the results stream.
    pub(crate) report: StepReport,
}

/// `XPENDING <level> workers IDLE <least_ms> <start> + PAGE`: one page of entries idle for at
/// least `least_ms`.
fn idle_page(level: &str, least_ms: u64, start: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(level)
        .arg(WORKER_GROUP)
        .arg("IDLE")
        .arg(least_ms)
        .arg(start)
        .arg("+")
        .arg(PAGE);
    cmd
}

/// One XPENDING reply: id, owner, idle time (ms), deliveries.
type Pending = (String, String, u64, u64);

/// A stream entry as XRANGE returns it: its id and its fields.
type StreamEntry = (String, BTreeMap<String, Vec<u8>>);

/// The `name=` fields of a `CLIENT LIST` reply (one client per line, `key=value` fields
/// separated by spaces; a name holds no space), empty names left out.
fn client_names(list: &str) -> BTreeSet<String> {
    list.lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("name=")))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

impl Store {
    /// The entries of every ready stream idle for at least `least_ms`, owned by workers (the
    /// reaper's own consumer left out): the first page of every level in one pipeline, then
    /// further pages of the levels that have more, with an exclusive start id as the cursor. A
    /// stream or group that is gone (Redis lost its data) holds nothing.
    pub(crate) async fn idle_entries(&self, least_ms: u64) -> StoreResult<Vec<Idle>> {
        let levels: Vec<String> = dagrid_shared::redis::conn::all_ready_streams(&self.redis)
            .await?
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        let mut c = self.redis.conn().await?;
        let mut pipe = redis::pipe();
        for level in &levels {
            pipe.add_command(idle_page(level, least_ms, "-"));
        }
        let pages: Vec<Vec<Pending>> = match pipe.query_async(&mut *c).await {
            Ok(pages) => pages,
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
                page = idle_page(level, least_ms, &start)
                    .query_async(&mut *c)
                    .await?;
            }
        }
        Ok(out)
    }

    /// How long Redis has been up (ms), from `INFO server`'s `uptime_in_seconds` (`u64::MAX`
    /// when the field is missing).
    pub(crate) async fn redis_uptime_ms(&self) -> StoreResult<u64> {
        let mut c = self.redis.conn().await?;
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

    /// What Redis holds of each worker of `names`: its score in the workers ZSET and its
    /// heartbeat key (`ZSCORE` and `GET` each, in one pipeline).
    pub(crate) async fn seen(
        &self,
        names: &BTreeSet<String>,
    ) -> StoreResult<BTreeMap<String, Seen>> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        let mut pipe = redis::pipe();
        for o in names {
            pipe.cmd("ZSCORE").arg(keys.workers()).arg(o);
            pipe.cmd("GET").arg(keys.worker(o));
        }
        let replies: Vec<Value> = conn::query_pipeline(&mut c, &pipe).await?;
        let mut out = BTreeMap::new();
        for (o, pair) in names.iter().zip(replies.chunks(2)) {
            let last_ms: Option<f64> = pair
                .first()
                .and_then(|v| redis::from_redis_value(v.clone()).ok())
                .flatten();
            let beat: Option<Vec<u8>> = pair
                .get(1)
                .and_then(|v| redis::from_redis_value(v.clone()).ok())
                .flatten();
            let heartbeat = beat.and_then(|b| model::decode::<Heartbeat>(&b).ok());
            out.insert(o.clone(), Seen { last_ms, heartbeat });
        }
        Ok(out)
    }

    /// The last heartbeat (ms; its score in the workers ZSET) of each of `names`, in order
    /// (`ZSCORE` each, one pipeline).
    pub(crate) async fn last_heartbeats(
        &self,
        names: &BTreeSet<String>,
    ) -> StoreResult<Vec<Option<f64>>> {
        let mut c = self.redis.conn().await?;
        let mut pipe = redis::pipe();
        for o in names {
            pipe.cmd("ZSCORE").arg(self.redis.keys().workers()).arg(o);
        }
        Ok(conn::query_pipeline(&mut c, &pipe).await?)
    }

    /// The clients connected to Redis (`CLIENT LIST TYPE normal`), or that Redis refuses to
    /// tell (a server error, not counted as a Redis error).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached or the call fails otherwise.
    pub(crate) async fn clients(&self) -> StoreResult<Clients> {
        let mut c = self.redis.conn().await?;
        let list: Result<String, redis::RedisError> = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut *c)
            .await;
        match list {
            Ok(text) => Ok(Clients::Names(client_names(&text))),
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                Ok(Clients::Refused(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tasks of `entries` (`XRANGE <level> <id> <id>` each, one pipeline), in order;
    /// `None` for an entry that is gone or holds no readable task.
    pub(crate) async fn ready_tasks(
        &self,
        entries: &[&Idle],
    ) -> StoreResult<Vec<Option<StepTask>>> {
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XRANGE").arg(&e.level).arg(&e.id).arg(&e.id);
        }
        let mut c = self.redis.conn().await?;
        let found: Vec<Vec<StreamEntry>> = conn::query_pipeline(&mut c, &pipe).await?;
        Ok(found
            .into_iter()
            .map(|found| {
                found
                    .first()
                    .and_then(|(_, fields)| fields.get("t"))
                    .and_then(|raw| match dagrid_shared::ready::decode(raw) {
                        Ok(dagrid_shared::ready::ReadyTask::Ref(r)) => Some(r.unresolved()),
                        Ok(dagrid_shared::ready::ReadyTask::Full(t)) => Some(*t),
                        Err(_) => None,
                    })
            })
            .collect())
    }

    /// Acknowledges and deletes one workers'-group entry (XACK and XDEL in one MULTI).
    pub(crate) async fn drop_entry(&self, entry: &Idle) -> StoreResult<()> {
        conn::ack_and_delete(
            &self.redis,
            &entry.level,
            WORKER_GROUP,
            std::slice::from_ref(&entry.id),
        )
        .await?;
        Ok(())
    }

    /// Runs `reclaim.lua` for each of `reclaims` in one pipeline (it checks idle time and
    /// heartbeat again, then acknowledges and deletes the entry and adds the `lost` report);
    /// returns how many entries were taken back.
    pub(crate) async fn reclaim(&self, reclaims: &[Reclaim<'_>]) -> StoreResult<usize> {
        if reclaims.is_empty() {
            return Ok(0);
        }
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        for r in reclaims {
            let mut inv = scripts::RECLAIM.prepare_invoke();
            inv.key(&r.entry.level)
                .key(keys.results())
                .key(keys.workers())
                .arg(WORKER_GROUP)
                .arg(&r.entry.id)
                .arg(&r.entry.owner)
                .arg(r.least_idle_ms)
                .arg(model::encode(&r.report).map_err(encoding)?)
                .arg(r.silent_ms);
            pipe.invoke_script(&inv);
        }
        let replies = self.script_pipeline(&pipe).await?;
        Ok(replies
            .iter()
            .filter(|r| matches!(r, Value::Int(1)))
            .count())
    }

    /// The consumers of the workers' group on every ready stream (`XINFO CONSUMERS` per level;
    /// a level without the group has none).
    pub(crate) async fn consumers(&self) -> StoreResult<Vec<Consumer>> {
        let streams = dagrid_shared::redis::conn::all_ready_streams(&self.redis).await?;
        let mut c = self.redis.conn().await?;
        let mut out = Vec::new();
        for (_, level) in streams {
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
                out.push(Consumer {
                    level: level.clone(),
                    name,
                    pending: int("pending"),
                    idle_ms: int("idle") as u64,
                });
            }
        }
        Ok(out)
    }

    /// Deletes the consumers `dead` (`delete_consumer.lua` each, which checks again, atomically
    /// with the delete, that the consumer holds nothing and its worker sent no heartbeat since
    /// `cutoff_ms`), and drops the workers-ZSET members with no heartbeat since `cutoff_ms`
    /// whose heartbeat key has expired (`ZRANGE … BYSCORE`, then the scripts and an `EXISTS`
    /// each in one pipeline, then one `ZREM`). Returns how many workers were forgotten.
    pub(crate) async fn remove_consumers(
        &self,
        dead: &[&Consumer],
        cutoff_ms: u64,
    ) -> StoreResult<usize> {
        let keys = self.redis.keys();
        let mut c = self.redis.conn().await?;
        let mut pipe = redis::pipe();
        for consumer in dead {
            let mut inv = scripts::DELETE_CONSUMER.prepare_invoke();
            inv.key(&consumer.level)
                .key(keys.workers())
                .arg(WORKER_GROUP)
                .arg(&consumer.name)
                .arg(cutoff_ms);
            pipe.invoke_script(&inv).ignore();
        }
        let stale: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.workers())
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .arg("BYSCORE")
            .query_async(&mut *c)
            .await?;
        for w in &stale {
            // Only when its heartbeat key is gone too (the ZSET score can lag a reconnect).
            pipe.cmd("EXISTS").arg(keys.worker(w));
        }
        if dead.is_empty() && stale.is_empty() {
            return Ok(0);
        }
        let replies: Vec<Value> = self.redis.script_pipeline(&pipe).await?;
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
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::client_names;
    use dagrid_shared::redis::keys::worker_client_name;
    use std::collections::BTreeSet;

    #[test]
    fn client_list_names_are_read_from_their_field() {
        let list = "id=3 addr=127.0.0.1:5 laddr=127.0.0.1:6379 fd=8 name=host-12-ab age=3 idle=0 flags=N db=0 cmd=xreadgroup\n\
                    id=4 addr=127.0.0.1:6 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=0 flags=N db=0 cmd=client|list\n\
                    id=5 addr=127.0.0.1:7 laddr=127.0.0.1:6379 fd=10 name=w%20x age=1 lib-name=redis-rs\n";
        let names = client_names(list);
        assert_eq!(
            names,
            BTreeSet::from(["host-12-ab".to_string(), "w%20x".to_string()])
        );
        assert!(names.contains(&worker_client_name("w x")));
    }
}
