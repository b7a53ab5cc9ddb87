//! The results stream as the coordinators read it through their consumer group: step reports
//! (field `r`, a msgpack `StepReport`) and admission requests (field `a`, a queue name) that
//! workers leave for the coordinators ([`dagrid_shared::redis::keys::Keys::results`]).

use std::time::Duration;

use dagrid_shared::model::{self, StepReport};
use dagrid_shared::redis::conn::ConnError;
use dagrid_shared::redis::keys::COORDINATOR_GROUP;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::Value;

use super::Store;

/// A connection kept for blocking reads of the results stream (one per reader, never shared
/// with other commands).
pub(crate) type BlockingConn = redis::aio::MultiplexedConnection;

/// One results-stream entry.
#[derive(Debug)]
pub(crate) enum ResultEntry {
    /// A step report.
    Report {
        /// The stream entry id.
        id: String,
        /// The report.
        report: Box<StepReport>,
    },
    /// A worker finished a run whose queue has waiting runs: admit them.
    Admit {
        /// The stream entry id.
        id: String,
        /// The queue.
        queue: String,
    },
    /// Every child run of a call step has finished (field `c`): finish the step.
    ChildrenDone {
        /// The stream entry id.
        id: String,
        /// The parent run.
        run: String,
        /// Its call step.
        step: String,
    },
    /// Neither (undecodable): acknowledge and drop it.
    Garbage {
        /// The stream entry id.
        id: String,
    },
}

impl ResultEntry {
    fn of(entry: StreamId) -> Self {
        if let Some(Value::BulkString(q)) = entry.map.get("a") {
            return Self::Admit {
                queue: String::from_utf8_lossy(q).into_owned(),
                id: entry.id,
            };
        }
        if let Some(Value::BulkString(c)) = entry.map.get("c") {
            let text = String::from_utf8_lossy(c);
            if let Some((run, step)) = text.split_once('\n') {
                return Self::ChildrenDone {
                    run: run.to_string(),
                    step: step.to_string(),
                    id: entry.id,
                };
            }
        }
        let report = entry.map.get("r").and_then(|v| match v {
            Value::BulkString(b) => model::decode::<StepReport>(b).ok(),
            _ => None,
        });
        match report {
            Some(report) => Self::Report {
                id: entry.id,
                report: Box::new(report),
            },
            None => Self::Garbage { id: entry.id },
        }
    }
}

impl Store {
    /// Reads up to `count` entries as `consumer` of the coordinators' group: new ones (`from` =
    /// `>`, blocking up to [`dagrid_shared::redis::conn::BLOCK_TIMEOUT`]) or the consumer's own
    /// pending ones (`from` = `0`, answered at once). `conn` is opened when `None`.
    ///
    /// # Errors
    /// Redis errors (NOGROUP among them: [`ConnError::is_no_group`]).
    pub(crate) async fn read_results(
        &self,
        consumer: &str,
        conn: &mut Option<BlockingConn>,
        from: &str,
        count: usize,
    ) -> Result<Vec<ResultEntry>, ConnError> {
        if conn.is_none() {
            *conn = Some(self.redis().blocking_conn().await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(Vec::new());
        };
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(COORDINATOR_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(dagrid_shared::redis::conn::BLOCK_TIMEOUT.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.redis().keys().results())
            .arg(from)
            .query_async(c)
            .await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(ResultEntry::of)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Takes over up to `count` entries idle for `idle` from other consumers (one XAUTOCLAIM
    /// from `cursor`); returns the next cursor (`0-0` when the scan is done) and the entries.
    pub(crate) async fn autoclaim_results(
        &self,
        consumer: &str,
        idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<ResultEntry>), ConnError> {
        let mut c = self.redis().conn().await?;
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.redis().keys().results())
            .arg(COORDINATOR_GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut *c)
            .await?;
        let reply: StreamAutoClaimReply =
            redis::FromRedisValue::from_redis_value(v).map_err(redis::RedisError::from)?;
        Ok((
            reply.next_stream_id,
            reply.claimed.into_iter().map(ResultEntry::of).collect(),
        ))
    }

    /// Acknowledges and deletes results-stream entries.
    pub(crate) async fn ack_results(&self, ids: &[String]) -> Result<(), ConnError> {
        let results = self.redis().keys().results();
        dagrid_shared::redis::conn::ack_and_delete(self.redis(), &results, COORDINATOR_GROUP, ids)
            .await
    }
}
