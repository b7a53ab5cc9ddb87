//! Log tails: the last bytes of a step's output that its worker stores in Redis
//! ([`dagrid_shared::redis::keys::Keys::log_tail`]), for `GET /api/v1/runs/{id}/steps/{step}/log`.

use dagrid_shared::redis::conn::ConnError;
use dagrid_shared::redis::fields::log_tail_field;

use super::Store;

impl Store {
    /// The log tail a worker stored for a step (its last attempt), from the HASH of
    /// [`dagrid_shared::redis::keys::Keys::log_tail`]; a tail stored by an older version (a STRING) is
    /// read as a tail whose size is its length and whose attempt is unknown.
    pub(crate) async fn log_tail(
        &self,
        run: &str,
        step: &str,
    ) -> Result<Option<LogTail>, ConnError> {
        let key = self.redis.keys().log_tail(run, step);
        let mut c = self.redis.conn().await?;
        let fields: Result<TailFields, _> = redis::cmd("HMGET")
            .arg(&key)
            .arg(log_tail_field::TAIL)
            .arg(log_tail_field::SIZE)
            .arg(log_tail_field::ATTEMPT)
            .query_async(&mut *c)
            .await;
        match fields {
            Ok((Some(tail), size, attempt)) => Ok(Some(LogTail {
                size: size.unwrap_or(tail.len() as u64).max(tail.len() as u64),
                tail,
                attempt,
            })),
            Ok((None, _, _)) => Ok(None),
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let tail: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&key).query_async(&mut *c).await?;
                Ok(tail.map(|tail| LogTail {
                    size: tail.len() as u64,
                    tail,
                    attempt: None,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The `tail`, `size` and `attempt` fields of a log tail HASH.
type TailFields = (Option<Vec<u8>>, Option<u64>, Option<u32>);

/// A step's log tail as a worker stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogTail {
    /// The last (at most 16 KiB) bytes of the attempt's combined output.
    pub(crate) tail: Vec<u8>,
    /// Total bytes the attempt had written when the tail was stored: `tail` holds bytes
    /// `size - tail.len()` to `size` of its full log.
    pub(crate) size: u64,
    /// The attempt it belongs to; `None` for a tail stored by an older version.
    pub(crate) attempt: Option<u32>,
}
