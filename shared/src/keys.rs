//! The one place that names every Redis key dagrid uses.
//!
//! Every key of a namespace starts with `{<namespace>}:`; the braces are a Redis Cluster hash
//! tag, so all keys of one namespace live in one slot and every Lua script may touch any of them
//! (see <https://redis.io/docs/reference/cluster-spec/#hash-tags>). The full keyspace is
//! described in `docs/architecture.md`.

/// Consumer group of the workers on the ready stream ([`Keys::ready`]).
pub const WORKER_GROUP: &str = "workers";
/// Consumer group of the coordinators on the results stream ([`Keys::results`]).
pub const COORDINATOR_GROUP: &str = "coordinators";

/// Builds the keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under the namespace `namespace` (for example `dagrid`), giving `{dagrid}:…`.
    pub fn new(namespace: &str) -> Self {
        Self {
            prefix: format!("{{{namespace}}}:"),
        }
    }

    /// The prefix shared by every key, hash tag included, for example `{dagrid}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// HASH: DAG name → msgpack [`crate::model::DagRecord`] (the registered version of each DAG).
    pub fn dags(&self) -> String {
        format!("{}dags", self.prefix)
    }

    /// STRING: msgpack [`crate::dag::Dag`] of one DAG version, addressed by its content digest.
    /// Immutable once written; runs refer to the version they started with.
    pub fn spec(&self, digest: &str) -> String {
        format!("{}spec:{digest}", self.prefix)
    }

    /// HASH: one run (fields in [`crate::model::run_field`]) and its steps (`s:<step>`).
    pub fn run(&self, run_id: &str) -> String {
        format!("{}run:{run_id}", self.prefix)
    }

    /// ZSET (all scores 0, members ordered by run id, which is a UUIDv7 and so by time): every run.
    pub fn runs(&self) -> String {
        format!("{}runs", self.prefix)
    }

    /// ZSET like [`Keys::runs`], for the runs of one DAG.
    pub fn runs_by_dag(&self, dag: &str) -> String {
        format!("{}runs:dag:{dag}", self.prefix)
    }

    /// ZSET like [`Keys::runs`], for the runs in one status (`queued`, `running`, …).
    pub fn runs_by_status(&self, status: &str) -> String {
        format!("{}runs:status:{status}", self.prefix)
    }

    /// STREAM of ready steps (field `t`: msgpack [`crate::model::StepTask`]), read by the
    /// workers through the [`WORKER_GROUP`] consumer group. Entries are deleted once acknowledged.
    pub fn ready(&self) -> String {
        format!("{}ready", self.prefix)
    }

    /// STREAM of step reports (field `r`: msgpack [`crate::model::StepReport`]), read by the
    /// coordinators through the [`COORDINATOR_GROUP`] consumer group. Entries are deleted once applied.
    pub fn results(&self) -> String {
        format!("{}results", self.prefix)
    }

    /// STRING: the tail of one step's combined stdout and stderr (the last attempt's).
    pub fn log_tail(&self, run_id: &str, step: &str) -> String {
        format!("{}log:{run_id}:{step}", self.prefix)
    }

    /// STRING with a TTL: the last heartbeat of one worker (msgpack [`crate::model::Heartbeat`]).
    /// It expires when the worker stops sending heartbeats.
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}", self.prefix)
    }

    /// ZSET: worker id → time of its last heartbeat (ms since the epoch), so workers can be
    /// listed without SCAN. Members whose [`Keys::worker`] key expired are dead and get pruned.
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_namespace_hash_tag() {
        let k = Keys::new("ns");
        for key in [
            k.dags(),
            k.spec("d"),
            k.run("r"),
            k.runs(),
            k.runs_by_dag("x"),
            k.runs_by_status("queued"),
            k.ready(),
            k.results(),
            k.log_tail("r", "s"),
            k.worker("w"),
            k.workers(),
        ] {
            assert!(key.starts_with("{ns}:"), "{key}");
        }
    }
}
