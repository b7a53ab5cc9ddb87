//! The one place that names every Redis key dagrid uses.
//!
//! Every key of a namespace starts with `{<namespace>}:`; the braces are a Redis Cluster hash
//! tag, so all keys of one namespace live in one slot and every Lua script may touch any of them
//! (see <https://redis.io/docs/reference/cluster-spec/#hash-tags>). The full keyspace is
//! described in `docs/architecture.md`.

/// Consumer group of the workers on the ready stream ([`Keys::ready`]).
pub const WORKER_GROUP: &str = "workers";
/// The consumer of the [`WORKER_GROUP`] group that the coordinators' reaper moves a dead
/// worker's ready entries to, inside the script that also acknowledges and deletes them (so
/// nothing is ever left pending under this name).
pub const REAPER_CONSUMER: &str = "reaper";
/// Consumer group of the coordinators on the results stream ([`Keys::results`]).
pub const COORDINATOR_GROUP: &str = "coordinators";

/// The Redis client name (`CLIENT SETNAME`) of every connection a worker opens: its worker id,
/// with each byte Redis refuses in a name (outside `!`..=`~`, so spaces and newlines) and `%`
/// itself written `%XX` (hex). The coordinators' reaper looks for it in `CLIENT LIST` to tell a
/// worker that died (no connection left) from one that is only silent.
pub fn worker_client_name(worker_id: &str) -> String {
    let mut name = String::with_capacity(worker_id.len());
    for b in worker_id.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

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

    /// HASH: one run (fields in [`crate::redis::fields::run_field`]) and its steps (`s:<step>`).
    pub fn run(&self, run_id: &str) -> String {
        format!("{}run:{run_id}", self.prefix)
    }

    /// ZSET (all scores 0, members ordered by run id, and so by time, [`crate::run_id`]): the
    /// runs of one DAG. There is no index of all runs: listing them merges the five
    /// [`Keys::runs_by_status`] indexes, so each run is in two indexes.
    pub fn runs_by_dag(&self, dag: &str) -> String {
        format!("{}runs:dag:{dag}", self.prefix)
    }

    /// ZSET like [`Keys::runs_by_dag`], for the runs in one status (`queued`, `running`, …);
    /// every run is in exactly one.
    pub fn runs_by_status(&self, status: &str) -> String {
        format!("{}runs:status:{status}", self.prefix)
    }

    /// STREAM of ready steps of one priority level (0..=[`crate::dag::Priority::MAX`], higher
    /// runs first; field `t`: msgpack [`crate::ready::TaskRef`], or a whole
    /// [`crate::model::StepTask`] from older versions), read by the workers through
    /// the [`WORKER_GROUP`] consumer group. Entries are deleted once acknowledged.
    pub fn ready(&self, priority: u8) -> String {
        format!("{}ready:{priority}", self.prefix)
    }

    /// Every ready stream, highest priority first: the order in which workers read them.
    pub fn ready_levels(&self) -> Vec<String> {
        crate::dag::Priority::levels_high_to_low()
            .map(|p| self.ready(p.get()))
            .collect()
    }

    /// STREAM like [`Keys::ready`], of the steps of runs whose DAG has the worker selector
    /// `selector` (canonical text, [`crate::labels::Labels::canonical`]): read only by workers
    /// whose labels satisfy it. An empty selector is the plain stream of the level.
    pub fn ready_of(&self, priority: u8, selector: &str) -> String {
        if selector.is_empty() {
            self.ready(priority)
        } else {
            format!("{}ready:{priority}:{selector}", self.prefix)
        }
    }

    /// The ready streams of `selector` (canonical; empty: the plain ones), highest priority
    /// first, each with its level.
    pub fn ready_levels_of(&self, selector: &str) -> Vec<(crate::dag::Priority, String)> {
        crate::dag::Priority::levels_high_to_low()
            .map(|p| (p, self.ready_of(p.get(), selector)))
            .collect()
    }

    /// SET: the worker selectors (canonical text) of every DAG version registered with one.
    /// Their ready streams ([`Keys::ready_of`]) are read by the workers they match and watched
    /// by the coordinators like the plain ones. Members are never removed (a selector no DAG
    /// uses any more costs an empty stream per level).
    pub fn selectors(&self) -> String {
        format!("{}selectors", self.prefix)
    }

    /// ZSET: run id → due time (ms since the epoch) of runs submitted with a delay. Due runs
    /// are moved on (to admission, then the ready streams) by the coordinators, atomically.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// ZSET: run id → admission order (priority first, then submit time; see
    /// [`crate::redis::fields::wait_score`]) of the runs of one queue waiting for capacity. A queue
    /// ("lane") is a DAG's `queue:`, or the DAG's own name when it names none (as in Dagu).
    pub fn waiting(&self, queue: &str) -> String {
        format!("{}waiting:{queue}", self.prefix)
    }

    /// SET: ids of the admitted, unfinished runs of one queue (its `maxConcurrency` counts them).
    pub fn active(&self, queue: &str) -> String {
        format!("{}active:{queue}", self.prefix)
    }

    /// SET: ids of the admitted, unfinished runs of one DAG, kept for DAGs whose
    /// `maxActiveRuns` applies apart from their queue's limit.
    pub fn active_dag(&self, dag: &str) -> String {
        format!("{}active-dag:{dag}", self.prefix)
    }

    /// SET: names of the queues that have runs waiting for capacity, so the coordinators can
    /// find them without SCAN.
    pub fn waiting_queues(&self) -> String {
        format!("{}queues:waiting", self.prefix)
    }

    /// SET: names of the paused queues (nothing of theirs is admitted while paused).
    pub fn paused(&self) -> String {
        format!("{}queues:paused", self.prefix)
    }

    /// STRING: the id of the run holding a dedup key of a DAG (param dedup, `dedup:`) for its
    /// dedup window, the window as TTL, after it succeeded (and, without a TTL, the holder of a
    /// run queued by an earlier version, which held its key here while active). An active run
    /// holds its key as a field of [`Keys::dedup_holders`] instead. Named by a digest of the
    /// DAG and the key, so every dedup key is as short: `dd:` plus 24 hex digits (the first 96
    /// bits of the SHA-256 of `<dag> NUL <key>`), the digest that names its field there.
    pub fn dedup(&self, dag: &str, key: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(dag.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        let digest = h.finalize();
        format!("{}dd:{}", self.prefix, hex::encode(&digest[..12]))
    }

    /// HASH: dedup key digest as its 12 bytes ([`Keys::dedup_field`]) → the id of the active
    /// run holding it. One field per active run instead of a key of its own (a field costs
    /// about 85 bytes with its share of the hash's table, a key 120 and its share of the
    /// keyspace's); a key held for a dedup window after a success, which needs a TTL, is the
    /// STRING [`Keys::dedup`]. Holders taken by the previous version are fields of the 24 hex
    /// digits, which the scripts still find and release. A coordinator's retention loop walks
    /// the hash and releases the fields of finished runs (`release_holder.lua`).
    pub fn dedup_holders(&self) -> String {
        format!("{}dd", self.prefix)
    }

    /// The field of the dedup key `key` ([`Keys::dedup`]) in [`Keys::dedup_holders`]: the 12
    /// bytes its last 24 characters spell in hex (a 12-byte field takes a 16-byte allocation
    /// in Redis, one of 24 a 32-byte one). `None` when they are not hex digits.
    pub fn dedup_field(key: &str) -> Option<Vec<u8>> {
        hex::decode(key.get(key.len().checked_sub(24)?..)?).ok()
    }

    /// The dedup key a run's `dedup` field names: the field holds the key's digest (the 24 hex
    /// digits after `dd:`, [`Keys::dedup`]), or, in runs queued by earlier versions, the whole
    /// key name (which starts with the prefix, `{`).
    pub fn dedup_named(&self, field: &str) -> String {
        if field.starts_with('{') {
            field.to_string()
        } else {
            format!("{}dd:{field}", self.prefix)
        }
    }

    /// STRING: the name [`Keys::dedup`] had before it became a digest (`dedup:<dag>:<key>`).
    /// Runs queued by earlier versions hold keys of this form (their `dedup` field names
    /// them), so a submit also looks here for a holder.
    pub fn dedup_legacy(&self, dag: &str, key: &str) -> String {
        format!("{}dedup:{dag}:{key}", self.prefix)
    }

    /// HASH with a TTL (24 h from its first write): the record of one `Idempotency-Key` of
    /// `POST /api/v1/runs` or `/runs/batch`. Field `#`: the digest of the request body; field
    /// `~` (`3`) marks the block form: field `B<n>` holds items `150n` to `150n + 149` as
    /// 27-byte slots, `c` (created) or `d` (deduplicated onto that run) then the 26-character
    /// run id, spaces while not recorded (a block of 4,050 bytes fills a 4 KiB allocation).
    /// An id that does not fit a slot (a run of an earlier version, 36 characters) is recorded
    /// as a field `<item index>` → `c:<run id>` or `d:<run id>`, and `~` becomes `4`.
    /// Records of earlier versions keep their form: items only (no `~`), or blocks `b<n>` of
    /// 200 slots of 37 bytes, ids padded with spaces (`~` `1`, or `2` with items too).
    /// Written by the submit script together with the runs it records.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// STRING with a TTL: set NX by the coordinator that fires one cron slot of a DAG, so each
    /// slot fires once however many coordinators run. Holds the run id.
    pub fn fired(&self, dag: &str, slot_ms: u64) -> String {
        format!("{}fired:{dag}:{slot_ms}", self.prefix)
    }

    /// HASH: DAG name → the latest cron slot fired for it (ms), for `catchupWindow`.
    pub fn schedule_state(&self) -> String {
        format!("{}schedule:last", self.prefix)
    }

    /// STRING with a TTL: set NX by the coordinator whose `schedule.restart` slot of a DAG
    /// starts the new run (Dagu `schedule.restart`), so each restart starts one run. Holds the
    /// run id.
    pub fn fired_restart(&self, dag: &str, slot_ms: u64) -> String {
        format!("{}fired:{dag}@restart:{slot_ms}", self.prefix)
    }

    /// HASH: DAG name → the newest cron slot of an `overlapPolicy: latest` DAG waiting for the
    /// previous scheduled run to end (ms); older waiting slots are dropped (Dagu `latest`).
    pub fn schedule_pending(&self) -> String {
        format!("{}schedule:pending", self.prefix)
    }

    /// HASH: `stop:<dag>` / `restart:<dag>` → the latest `schedule.stop` / `schedule.restart`
    /// slot acted on (ms), so each such slot acts once per pass window.
    pub fn schedule_actions(&self) -> String {
        format!("{}schedule:actions", self.prefix)
    }

    /// STREAM of step reports (field `r`: msgpack [`crate::model::StepReport`]), read by the
    /// coordinators through the [`COORDINATOR_GROUP`] consumer group. Entries are deleted once applied.
    pub fn results(&self) -> String {
        format!("{}results", self.prefix)
    }

    /// ZSET: the child runs of a run's call steps (score 0, so ordered by id: creation
    /// order), added by `submit.lua` in the call that creates them; `GET
    /// /api/v1/runs?parent=<id>` lists it. Deleted with the run.
    pub fn children(&self, run_id: &str) -> String {
        format!("{}children:{run_id}", self.prefix)
    }

    /// HASH: what a call step's current attempt waits for and what its child runs gave
    /// (`tok` the attempt's token, `n` distinct children expected, `d` of those finished,
    /// `c:<child id>` the child's item indexes, `r:<child id>` its msgpack
    /// [`crate::model::ChildResult`]); see docs/architecture.md, "Sub-DAGs". Deleted with the
    /// run.
    pub fn fan(&self, run_id: &str, step: &str) -> String {
        format!("{}fan:{run_id}:{step}", self.prefix)
    }

    /// HASH: the tail of one step's combined stdout and stderr (the last attempt's): `tail`
    /// (its last 16 KiB, bytes), `size` (total bytes the attempt wrote, so `tail` holds bytes
    /// `size - len(tail)` to `size` of its full log) and `attempt`. Written by the worker's
    /// final report and, while the step runs, at most once a second when its output grew.
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

    /// STREAM of run and step state changes (fields in [`crate::redis::fields::event_field`]), capped
    /// at about [`crate::redis::fields::EVENTS_CAP`] entries (`XTRIM MAXLEN ~`, about one script call in eight). Written by the scripts
    /// that make the changes, in the same call; read by the coordinators' event feed
    /// (`GET /api/v1/events`). The entry id is the event id.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
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
            k.runs_by_dag("x"),
            k.runs_by_status("queued"),
            k.ready(5),
            k.delayed(),
            k.waiting("q"),
            k.active("q"),
            k.active_dag("d"),
            k.waiting_queues(),
            k.paused(),
            k.dedup("d", "k"),
            k.dedup_holders(),
            k.dedup_legacy("d", "k"),
            k.fired("d", 1),
            k.schedule_state(),
            k.fired_restart("d", 1),
            k.schedule_pending(),
            k.schedule_actions(),
            k.results(),
            k.log_tail("r", "s"),
            k.worker("w"),
            k.workers(),
            k.events(),
        ] {
            assert!(key.starts_with("{ns}:"), "{key}");
        }
    }

    #[test]
    fn a_run_names_its_dedup_key_by_digest_or_by_its_whole_name() {
        let k = Keys::new("ns");
        let key = k.dedup("d", "p:abc");
        // submit.lua writes the last 24 characters.
        assert_eq!(k.dedup_named(&key[key.len() - 24..]), key);
        assert_eq!(k.dedup_named(&key), key, "runs of earlier versions");
        let legacy = k.dedup_legacy("d", "p:abc");
        assert_eq!(k.dedup_named(&legacy), legacy);
    }

    #[test]
    fn a_dedup_key_is_a_fixed_size_digest_of_dag_and_key() {
        let k = Keys::new("dagrid");
        let a = k.dedup("one", "p:4b3a57fb30f87941a4d09ddea9c4b8cf");
        assert_eq!(a.len(), "{dagrid}:dd:".len() + 24, "{a}");
        assert_eq!(a, k.dedup("one", "p:4b3a57fb30f87941a4d09ddea9c4b8cf"));
        // The DAG and the key are told apart, also where they meet.
        assert_ne!(a, k.dedup("two", "p:4b3a57fb30f87941a4d09ddea9c4b8cf"));
        assert_ne!(k.dedup("a", "bc"), k.dedup("ab", "c"));
        assert_eq!(
            k.dedup("d", &"k".repeat(256)).len(),
            a.len(),
            "an explicit key of any length"
        );
        assert_eq!(k.dedup_legacy("one", "p:x"), "{dagrid}:dedup:one:p:x");
        // Its holders field: the 12 bytes its digest spells.
        let field = Keys::dedup_field(&a).unwrap();
        assert_eq!(hex::encode(&field), &a[a.len() - 24..]);
        assert_eq!(
            Keys::dedup_field("{dagrid}:dd:not-hex-at-all-not-hex-at"),
            None
        );
        assert_eq!(Keys::dedup_field("short"), None);
    }
}
