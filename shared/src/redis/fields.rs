//! The names inside the keys of [`super::keys`]: the run hash's fields, the delayed set's
//! members, and the fields of the events, log tail and stream entries. The Lua scripts
//! (`lua/`) write the same literals; a test in [`super::scripts`] checks that every literal a
//! script uses is declared here (or is a reply or flag code its header documents).

use crate::dag::Priority;

/// The admission order of a waiting run, as a ZSET score: priority first (higher first), then
/// submit time (earlier first). `(MAX - priority) * 2^42 + created_ms`, exact in a double
/// until the year 2109.
pub fn wait_score(priority: Priority, created_ms: u64) -> f64 {
    (((Priority::MAX - priority.get()) as u64) << 42 | (created_ms & ((1 << 42) - 1))) as f64
}

/// Field names of the run hash ([`crate::redis::keys::Keys::run`]).
pub mod run_field {
    /// DAG name.
    pub const DAG: &str = "dag";
    /// Digest of the DAG version the run uses ([`crate::redis::keys::Keys::spec`]).
    pub const SPEC: &str = "spec";
    /// [`crate::model::RunStatus`] name.
    pub const STATUS: &str = "status";
    /// The bound params ([`crate::stored::encode_params`]); absent when there are none.
    pub const PARAMS: &str = "params";
    /// Creation time (ms), in runs of earlier versions; a run of this version has none: its id
    /// holds the time ([`crate::run_id::created_ms`]), which readers take when it is absent.
    pub const CREATED: &str = "created";
    /// Time the first step started (ms).
    pub const STARTED: &str = "started";
    /// Time the run finished (ms).
    pub const FINISHED: &str = "finished";
    /// Version counter for compare-and-set updates by the coordinators (absent: 0).
    pub const VERSION: &str = "ver";
    /// Prefix of the step fields: `s:<step name>` → a [`crate::model::StepState`] in its stored form
    /// ([`crate::stored::encode_step`]).
    pub const STEP_PREFIX: &str = "s:";
    /// [`crate::dag::Priority`] (0..=9; absent: normal, 5).
    pub const PRIORITY: &str = "pri";
    /// The worker selector of the run's DAG version, canonical (`gpu=true,region=eu`; see
    /// [`crate::labels::Labels`]); absent: any worker. It names the ready streams of the run's
    /// steps ([`crate::Keys::ready_of`]).
    pub const SELECTOR: &str = "ws";
    /// A child run's parent run id ([`crate::model::ParentLink`]).
    pub const PARENT_RUN: &str = "pr";
    /// A child run's parent call step.
    pub const PARENT_STEP: &str = "ps";
    /// A child run's call depth (1 for a child of a top-level run).
    pub const PARENT_DEPTH: &str = "pd";
    /// The queue the run is admitted through (its DAG's `queue:`; absent: the DAG name).
    pub const QUEUE: &str = "queue";
    /// The DAG's `maxActiveRuns` when it applies apart from the queue's limit (0 or absent:
    /// none).
    pub const DAG_LIMIT: &str = "dlim";
    /// Why a `queued` run is not running yet, for people (absent once admitted).
    pub const REASON: &str = "reason";
    /// When a delayed run is due (ms).
    pub const DUE: &str = "due";
    /// The dedup key the run holds, if any: its digest (the 24 hex digits of
    /// [`crate::redis::keys::Keys::dedup`], which spell its field in `Keys::dedup_holders`,
    /// `Keys::dedup_field`), or in runs of earlier versions the whole key name.
    pub const DEDUP: &str = "dedup";
    /// How long the dedup key outlives a successful finish (ms; 0: released at once).
    pub const DEDUP_WINDOW: &str = "dedupwin";
    /// What created the run: `api` (absent), `batch`, `schedule` or `retry`.
    pub const TRIGGER: &str = "trigger";
    /// The cron slot (ms) a scheduled run was fired for.
    pub const SLOT: &str = "slot";
    /// Number of root-step tasks held while the run waits (delayed or for capacity).
    pub const HELD: &str = "held";
    /// Prefix of the held tasks: `h:1` … `h:<held>` → msgpack [`crate::model::StepTask`].
    pub const HELD_PREFIX: &str = "h:";
    /// Prefix of the step names of the held tasks: `hs:1` … `hs:<held>` → the step name whose
    /// `e:<step>` field gets the entry id once the task is queued.
    pub const HELD_STEP_PREFIX: &str = "hs:";
    /// Prefix of the ready streams of the held tasks: `hq:1` … `hq:<held>` → the index of the
    /// task's stream in the run's streams ([`crate::dag::Dag::selectors`], at the run's
    /// priority); absent: 0, the run's own stream (selector `ws`), as for runs held by
    /// versions without step-level selectors.
    pub const HELD_STREAM_PREFIX: &str = "hq:";
    /// Prefix of the ready-stream entry of a queued or running step: `e:<step>` → entry id
    /// (on the ready stream of the run's priority). Written by the script that queues the
    /// step, so stop and the reconciler find the entry without scanning the stream. Empty
    /// once the step left its queue (blanked by `apply_transition`'s HSET): none.
    pub const ENTRY_PREFIX: &str = "e:";
    /// Prefix of a retry waiting in the delayed set: `r:<step>` → msgpack
    /// [`crate::model::StepTask`] of the next attempt.
    pub const RETRY_TASK_PREFIX: &str = "r:";
    /// Prefix of the state a retrying step takes when its retry falls due: `rs:<step>` →
    /// [`crate::model::StepState`] in its stored form (status `queued`).
    pub const RETRY_STATE_PREFIX: &str = "rs:";
    /// How many times the run was retried automatically under its DAG's `retry_policy`
    /// (Dagu's `AutoRetryCount`; absent: 0).
    pub const AUTO_RETRIES: &str = "autoretry";
    /// When a failed run's next automatic retry is due (ms); absent when none waits.
    pub const RUN_RETRY_AT: &str = "retryat";
    /// The DAG-level values the run evaluated once (msgpack [`crate::model::Resolved`]), written with
    /// the report of the attempt that evaluated them; absent until then, and for DAGs that
    /// evaluate nothing ([`crate::dag::Dag::evaluates_once`]).
    pub const RESOLVED: &str = "ev";
}

/// Members of the delayed set ([`crate::redis::keys::Keys::delayed`]) other than delayed runs (whose
/// member is the bare run id). Run ids ([`crate::run_id`]) never contain `:`.
pub mod delayed_member {
    /// The next attempt of a retrying step: `s:<run id>:<step>`.
    pub fn retry(run_id: &str, step: &str) -> String {
        format!("s:{run_id}:{step}")
    }

    /// A run's DAG `timeoutSec` deadline: `t:<run id>`.
    pub fn deadline(run_id: &str) -> String {
        format!("t:{run_id}")
    }

    /// The automatic retry of a failed run under its DAG's `retry_policy`: `rr:<run id>`.
    pub fn run_retry(run_id: &str) -> String {
        format!("rr:{run_id}")
    }

    /// What a member of the delayed set stands for.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Due<'a> {
        /// A delayed run (its id).
        Run(&'a str),
        /// The retry of a step (run id, step name).
        Retry(&'a str, &'a str),
        /// A run's deadline (run id).
        Deadline(&'a str),
        /// The automatic retry of a failed run (run id).
        RunRetry(&'a str),
    }

    /// Reads a member back.
    pub fn parse(member: &str) -> Due<'_> {
        if let Some(rest) = member.strip_prefix("s:") {
            if let Some((run, step)) = rest.split_once(':') {
                return Due::Retry(run, step);
            }
        }
        if let Some(run) = member.strip_prefix("t:") {
            return Due::Deadline(run);
        }
        if let Some(run) = member.strip_prefix("rr:") {
            return Due::RunRetry(run);
        }
        Due::Run(member)
    }
}

/// About how many entries the events stream ([`crate::redis::keys::Keys::events`]) keeps: the
/// scripts that append trim it with `XTRIM MAXLEN ~ EVENTS_CAP`, about one call in eight
/// (lua/events.lua, `trim_events`; Redis trims whole stream nodes, so it may hold a few
/// hundred more). A one-step run writes about 6 events, so the stream covers the last
/// ~16,000 runs: a whole batch request (at most 10,000 runs) can be followed from its start. At roughly 60–80 bytes per entry that is 6–8 MB of Redis memory.
pub const EVENTS_CAP: u64 = 100_000;

/// Field names of an events-stream entry ([`crate::redis::keys::Keys::events`]). All values are
/// strings; `step` and `attempt` are present for step events only.
pub mod event_field {
    /// Run id.
    pub const RUN: &str = "run";
    /// DAG name.
    pub const DAG: &str = "dag";
    /// Step name (step events only).
    pub const STEP: &str = "step";
    /// The new status: a [`crate::model::RunStatus`] name for a run event, a [`crate::model::StepStatus`]
    /// name for a step event.
    pub const STATUS: &str = "status";
    /// The step's attempt number, from 1 (0 while never queued; step events only).
    pub const ATTEMPT: &str = "attempt";
    /// When the change was made (ms since the epoch), in entries of earlier versions; readers
    /// take the entry id's time when it is absent, as in the entries of this version.
    pub const AT: &str = "at";
    /// The run's new status when the transition that changed the step changed the run too
    /// (empty when it did not): one entry carries both events ([`crate::model::Event::from_entry`]).
    pub const RUN_STATUS: &str = "rs";
    /// The one field of an entry written by SUBMIT or APPLY_TRANSITION: the fields above (but
    /// `at`), packed into one value ([`crate::model::Event::pack`]).
    pub const PACKED: &str = "e";
}

/// Field names of a step's log tail hash ([`crate::redis::keys::Keys::log_tail`]).
pub mod log_tail_field {
    /// The last bytes of the attempt's combined output.
    pub const TAIL: &str = "tail";
    /// Total bytes of output the attempt wrote.
    pub const SIZE: &str = "size";
    /// The attempt the tail is of.
    pub const ATTEMPT: &str = "attempt";
}

/// The one field of an entry of each stream the scripts write ([`crate::redis::keys::Keys`]).
pub mod stream_field {
    /// A ready-stream entry's task (msgpack [`crate::ready::TaskRef`]).
    pub const TASK: &str = "t";
    /// A results-stream entry's report (msgpack [`crate::model::StepReport`]).
    pub const REPORT: &str = "r";
    /// A results-stream entry asking the coordinators for an admission pass of a queue (the
    /// queue's name).
    pub const ADMIT: &str = "a";
    /// A results-stream entry saying every child run of a call step has finished (text
    /// `<parent run id>` LF `<step>`): a coordinator reads the step's
    /// [`crate::redis::keys::Keys::fan`] and finishes the step.
    pub const CHILDREN_DONE: &str = "c";
}

/// The fields of a call step's [`crate::redis::keys::Keys::fan`] hash.
pub mod fan_field {
    /// The fencing token of the step attempt the hash is for.
    pub const TOKEN: &str = "tok";
    /// How many distinct child runs the attempt waits for.
    pub const EXPECTED: &str = "n";
    /// How many of those have finished (have a result).
    pub const DONE: &str = "d";
    /// `c:<child id>` → the child's item indexes (`0,3`: items with the same params share a run).
    pub const CHILD_PREFIX: &str = "c:";
    /// `r:<child id>` → msgpack [`crate::model::ChildResult`] of a finished child.
    pub const RESULT_PREFIX: &str = "r:";
}
