//! The Redis side of sub-DAG steps: a call step's fan hash ([`Keys::fan`]: reset before its
//! child runs are created, armed with them after, read when they have all finished) and a
//! run's children index ([`Keys::children`]).
//!
//! [`Keys::fan`]: dagrid_shared::redis::keys::Keys::fan
//! [`Keys::children`]: dagrid_shared::redis::keys::Keys::children

use std::collections::BTreeMap;

use dagrid_shared::model::{self, ChildResult};
use dagrid_shared::redis::conn::ConnError;
use dagrid_shared::redis::fields::fan_field;
use dagrid_shared::redis::scripts;

use super::Store;

/// A call step's fan hash, read back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fan {
    /// The fencing token of the attempt it is for.
    pub(crate) token: String,
    /// The children the attempt waits for: id, item indexes, result once finished; in the
    /// order of their first item.
    pub(crate) children: Vec<(String, Vec<usize>, Option<ChildResult>)>,
}

/// A child of [`Store::fan_arm`]: id, item indexes (`0,3`), and its result when it had
/// finished already (msgpack [`ChildResult`]).
pub(crate) type ArmedChild = (String, String, Option<Vec<u8>>);

impl Store {
    /// Makes the fan hash of `step` of `run` the attempt `token`'s, emptying one of another
    /// attempt (`lua/fan.lua` without children).
    pub(crate) async fn fan_reset(
        &self,
        run: &str,
        step: &str,
        token: &str,
    ) -> Result<(), ConnError> {
        self.fan_call(run, step, token, &[]).await.map(|_| ())
    }

    /// Records the children the attempt `token` waits for (`lua/fan.lua`); when all have
    /// finished already, the script queues the `c` entry that finishes the step. Returns how
    /// many are not finished, or -1 when the hash is another attempt's.
    pub(crate) async fn fan_arm(
        &self,
        run: &str,
        step: &str,
        token: &str,
        children: &[ArmedChild],
    ) -> Result<i64, ConnError> {
        self.fan_call(run, step, token, children).await
    }

    async fn fan_call(
        &self,
        run: &str,
        step: &str,
        token: &str,
        children: &[ArmedChild],
    ) -> Result<i64, ConnError> {
        let keys = self.redis().keys();
        let mut inv = scripts::FAN.prepare_invoke();
        inv.key(keys.fan(run, step))
            .key(keys.results())
            .arg(token)
            .arg(format!("{run}\n{step}"));
        for (id, items, result) in children {
            inv.arg(id)
                .arg(items)
                .arg(result.as_deref().unwrap_or_default());
        }
        let mut c = self.redis().conn().await?;
        Ok(inv.invoke_async::<i64>(&mut *c).await?)
    }

    /// The fan hash of `step` of `run`, `None` when there is none.
    pub(crate) async fn fan(&self, run: &str, step: &str) -> Result<Option<Fan>, ConnError> {
        let mut c = self.redis().conn().await?;
        let all: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.redis().keys().fan(run, step))
            .query_async(&mut *c)
            .await?;
        drop(c);
        let Some(token) = all.get(fan_field::TOKEN) else {
            return Ok(None);
        };
        let mut fan = Fan {
            token: String::from_utf8_lossy(token).into_owned(),
            children: Vec::new(),
        };
        for (field, value) in &all {
            let Some(id) = field.strip_prefix(fan_field::CHILD_PREFIX) else {
                continue;
            };
            let items = String::from_utf8_lossy(value)
                .split(',')
                .filter_map(|i| i.parse().ok())
                .collect();
            let result = all
                .get(&format!("{}{id}", fan_field::RESULT_PREFIX))
                .and_then(|raw| model::decode::<ChildResult>(raw).ok());
            fan.children.push((id.to_string(), items, result));
        }
        fan.children
            .sort_by_key(|(_, items, _)| items.first().copied().unwrap_or(usize::MAX));
        Ok(Some(fan))
    }

    /// Deletes the fan hash of `step` of `run` (its step has finished).
    pub(crate) async fn fan_delete(&self, run: &str, step: &str) -> Result<(), ConnError> {
        let mut c = self.redis().conn().await?;
        redis::cmd("UNLINK")
            .arg(self.redis().keys().fan(run, step))
            .query_async::<()>(&mut *c)
            .await?;
        Ok(())
    }

    /// How many child runs `run` has, and the ids of `count` of them from `start` (creation
    /// order).
    pub(crate) async fn children(
        &self,
        run: &str,
        start: usize,
        count: usize,
    ) -> Result<(u64, Vec<String>), ConnError> {
        let key = self.redis().keys().children(run);
        let mut c = self.redis().conn().await?;
        let (total, ids): (u64, Vec<String>) = redis::pipe()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("ZRANGE")
            .arg(&key)
            .arg(start)
            .arg((start + count).saturating_sub(1))
            .query_async(&mut *c)
            .await?;
        Ok((total, ids))
    }
}
