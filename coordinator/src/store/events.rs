//! Reads of the namespace's events stream ([`dagrid_shared::redis::keys::Keys::events`]) for the
//! event feed ([`crate::events`]): its last id, a catch-up page after a position (or that
//! events after it are gone), and the feed reader's `XREAD BLOCK` on a dedicated connection.

use dagrid_shared::model::Event;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::Value;

use super::{Store, StoreResult};

/// The id of an event: the events-stream entry that holds it (`<ms>-<seq>`) and which of the
/// entry's events it is. An entry holds one event, or two (a step's and its run's, see
/// [`Event::from_entry`]): the first of two is `<ms>-<seq>.0`; the last (or only) one is
/// `<ms>-<seq>`, which is also the entry as a whole, so a position given as a plain entry id
/// is after all of its events. Ordered as Redis orders the entries, then by event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EventId(pub(crate) u64, pub(crate) u64, pub(crate) u8);

impl EventId {
    /// The third field of the last (or only) event of an entry (the first of two has 0).
    pub(crate) const LAST: u8 = 1;

    /// The last event of entry `<ms>-<seq>`: the position after all of the entry.
    pub(crate) const fn at(ms: u64, seq: u64) -> Self {
        Self(ms, seq, Self::LAST)
    }

    /// Parses `<ms>-<seq>` or `<ms>` (seq 0), either followed by `.0` for the first of an
    /// entry's two events; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (entry, part) = match s.split_once('.') {
            Some((entry, "0")) => (entry, 0),
            Some(_) => return None,
            None => (s, Self::LAST),
        };
        let (ms, seq) = entry.split_once('-').unwrap_or((entry, "0"));
        Some(Self(ms.parse().ok()?, seq.parse().ok()?, part))
    }

    /// The entry it is in, as (ms, seq).
    pub(crate) fn entry(self) -> (u64, u64) {
        (self.0, self.1)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)?;
        if self.2 != Self::LAST {
            write!(f, ".{}", self.2)?;
        }
        Ok(())
    }
}

/// What the stream holds after a position.
#[derive(Debug)]
pub(crate) enum After {
    /// The events of up to the page size of entries after it, oldest first.
    Entries(Vec<(EventId, Event)>),
    /// Some entries after it are gone; the stream's last id (if any) is given.
    Lost(Option<EventId>),
}

/// One read of the feed's reader ([`Reader::read`]).
#[derive(Debug)]
pub(crate) struct Read {
    /// The id read after (the stream's last id when the reader had no position; `0-0` for an
    /// empty stream).
    pub(crate) from: String,
    /// Entries read, oldest first: each id, and its events (none when it is not an event).
    pub(crate) entries: Vec<(String, Vec<(EventId, Event)>)>,
}

/// The feed reader's dedicated connection for `XREAD BLOCK`, made at the first read and again
/// after [`Reader::reset`].
pub(crate) struct Reader {
    redis: dagrid_shared::redis::conn::Redis,
    conn: Option<redis::aio::MultiplexedConnection>,
}

impl Reader {
    /// Drops the connection (after a failed read): the next read makes a new one.
    pub(crate) fn reset(&mut self) {
        self.conn = None;
    }

    /// Reads up to `count` entries after `last` (after the stream's last entry, read with
    /// `XREVRANGE + - COUNT 1`, when `None`), waiting up to
    /// [`dagrid_shared::redis::conn::BLOCK_TIMEOUT`] for one (`XREAD COUNT BLOCK STREAMS`).
    pub(crate) async fn read(&mut self, last: Option<&str>, count: usize) -> StoreResult<Read> {
        let key = self.redis.keys().events();
        let c = match &mut self.conn {
            Some(c) => c,
            slot @ None => slot.insert(self.redis.blocking_conn().await?),
        };
        let from = match last {
            Some(id) => id.to_string(),
            None => {
                let tail: StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(c)
                    .await?;
                tail.ids
                    .first()
                    .map_or_else(|| "0-0".to_string(), |e| e.id.clone())
            }
        };
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(dagrid_shared::redis::conn::BLOCK_TIMEOUT.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&from)
            .query_async(c)
            .await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|entry| (entry.id.clone(), events_of(entry)))
            .collect();
        Ok(Read { from, entries })
    }
}

impl Store {
    /// A reader of the events stream with its own connection ([`Reader`]).
    pub(crate) fn events_reader(&self) -> Reader {
        Reader {
            redis: self.redis.clone(),
            conn: None,
        }
    }

    /// The position after the events stream's last entry (its id, `XREVRANGE + - COUNT 1`);
    /// `None` when it is empty.
    pub(crate) async fn events_tail(&self) -> StoreResult<Option<EventId>> {
        let mut c = self.redis.conn().await?;
        let tail: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.redis.keys().events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut *c)
            .await?;
        Ok(tail.ids.first().and_then(|e| EventId::parse(&e.id)))
    }

    /// Reads the events of up to `count` entries after `from` (from the rest of its own entry
    /// when it is the first of two events), unless some after it may be gone: the stream
    /// was trimmed (it holds fewer entries than were ever added to it: XINFO STREAM's `length`
    /// below `entries-added`) past `from` (its first entry is after `from`), or it is not the
    /// stream `from` came from (its `last-generated-id` is before `from`, or it does not exist:
    /// Redis lost its data). A client whose own last entry was trimmed, with none after it,
    /// also gets [`After::Lost`] (harmless: it reads its states again).
    pub(crate) async fn events_after(&self, from: EventId, count: usize) -> StoreResult<After> {
        let key = self.redis.keys().events();
        let mut c = self.redis.conn().await?;
        let info: Value = match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut *c)
            .await
        {
            Ok(v) => v,
            Err(e) if e.to_string().contains("no such key") => {
                return Ok(if from.entry() == (0, 0) {
                    After::Entries(Vec::new())
                } else {
                    After::Lost(None)
                });
            }
            Err(e) => return Err(e.into()),
        };
        let last_generated = info_field(&info, "last-generated-id").and_then(as_id);
        let trimmed = match (
            info_field(&info, "length").and_then(as_int),
            info_field(&info, "entries-added").and_then(as_int),
        ) {
            (Some(len), Some(added)) => added > len,
            _ => true,
        };
        let first = info_field(&info, "first-entry").and_then(|v| match v {
            Value::Array(e) => e.first().and_then(as_id),
            _ => None,
        });
        let at = from.entry();
        let lost = last_generated.is_none_or(|g| g.entry() < at)
            || (trimmed
                && first.is_none_or(|f| f.entry() > at)
                && last_generated.is_some_and(|g| g.entry() > at));
        if lost {
            return Ok(After::Lost(last_generated));
        }
        // After the whole entry, or from it when `from` is the first of its two events.
        let start = if from.2 == EventId::LAST {
            format!("({}-{}", at.0, at.1)
        } else {
            format!("{}-{}", at.0, at.1)
        };
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut *c)
            .await?;
        Ok(After::Entries(
            reply
                .ids
                .into_iter()
                .flat_map(events_of)
                .filter(|(id, _)| *id > from)
                .collect(),
        ))
    }

    /// Test hook: adds a `queued` run event for `run` of DAG `d` to the events stream; returns
    /// its id.
    #[cfg(test)]
    pub(crate) async fn add_test_event(&self, run: &str) -> EventId {
        use dagrid_shared::redis::fields::event_field as f;
        let mut c = self.redis.conn().await.unwrap();
        let id: String = redis::cmd("XADD")
            .arg(self.redis.keys().events())
            .arg("*")
            .arg(f::RUN)
            .arg(run)
            .arg(f::DAG)
            .arg("d")
            .arg(f::STATUS)
            .arg("queued")
            .arg(f::AT)
            .arg(1)
            .query_async(&mut *c)
            .await
            .unwrap();
        EventId::parse(&id).unwrap()
    }

    /// Test hook: XREAD calls so far (`INFO commandstats`).
    #[cfg(test)]
    pub(crate) async fn xread_calls(&self) -> u64 {
        let mut c = self.redis.conn().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut *c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_xread:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

/// The value under `name` in an XINFO STREAM reply (a flat key/value array in RESP2, a map in
/// RESP3).
fn info_field<'a>(info: &'a Value, name: &str) -> Option<&'a Value> {
    let is = |k: &Value| match k {
        Value::BulkString(k) => k == name.as_bytes(),
        Value::SimpleString(k) => k == name,
        _ => false,
    };
    match info {
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] if is(k) => Some(v),
            _ => None,
        }),
        Value::Map(pairs) => pairs.iter().find_map(|(k, v)| is(k).then_some(v)),
        _ => None,
    }
}

fn as_id(v: &Value) -> Option<EventId> {
    match v {
        Value::BulkString(b) => EventId::parse(&String::from_utf8_lossy(b)),
        Value::SimpleString(s) => EventId::parse(s),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// The events of an events-stream entry, each with its id ([`Event::from_entry`]); none for an
/// entry that is not an event.
fn events_of(entry: StreamId) -> Vec<(EventId, Event)> {
    let Some(EventId(ms, seq, _)) = EventId::parse(&entry.id) else {
        return Vec::new();
    };
    let fields: Vec<(&str, &[u8])> = entry
        .map
        .iter()
        .filter_map(|(k, v)| match v {
            Value::BulkString(b) => Some((k.as_str(), b.as_slice())),
            _ => None,
        })
        .collect();
    let events = Event::from_entry(fields);
    let n = events.len();
    events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            let part = if i + 1 == n { EventId::LAST } else { i as u8 };
            // Entries of this version have no `at`: the change was made when Redis added them.
            if e.at_ms == 0 {
                e.at_ms = ms;
            }
            (EventId(ms, seq, part), e)
        })
        .collect()
}
