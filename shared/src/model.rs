//! The records dagrid keeps in Redis and sends over its streams, and their msgpack encoding.
//!
//! Every payload is msgpack with field names (`rmp_serde::to_vec_named`), so that a newer
//! process can add optional fields without breaking an older one. Times are milliseconds since
//! the Unix epoch (`*_ms`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::dag::{BoundParam, Priority};
use crate::redis::fields::event_field;

/// Encodes a record as msgpack with field names.
///
/// # Errors
/// Only when `value` cannot be represented in msgpack (never for the types of this module).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes a msgpack record written by [`encode`].
///
/// # Errors
/// When the bytes are not a msgpack encoding of `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The status of a run. Dagu's run statuses, minus partially succeeded (a later issue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Accepted; no step has started yet.
    Queued,
    /// At least one step has started and the run has not finished.
    Running,
    /// Every step succeeded (or was skipped without a failure).
    Succeeded,
    /// A step failed (its retries used up) or the run exceeded its DAG's `timeoutSec`; the
    /// steps downstream of a failed step were skipped.
    Failed,
    /// Stopped on request (`dagrid stop`, `POST /api/v1/runs/{id}/stop`; Dagu's "cancelled").
    Aborted,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Aborted,
    ];

    /// The lowercase name used in the API, the CLI and the Redis indexes.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
        }
    }

    /// True once the run can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Aborted
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status \"{0}\"; use one of queued, running, succeeded, failed, aborted")]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// The status of one step of a run (Dagu's step statuses, minus the ones later issues add).
/// `retrying` is dagrid's: a failed attempt waiting in the delayed set for its next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for its dependencies.
    Pending,
    /// In the ready stream, waiting for a worker.
    Queued,
    /// A worker has started its process.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, was killed, or could not start.
    Failed,
    /// Not run: a dependency failed or was skipped (and its `continueOn` did not cover that),
    /// its own `preconditions` did not hold, or the DAG's did not.
    Skipped,
    /// An attempt failed and the next one waits for its backoff (`retryPolicy`) to pass.
    Retrying,
    /// Stopped with its run (Dagu's "cancelled"), or never started because the run stopped.
    Aborted,
    /// Only in [`StepState::history`]: an attempt taken back from its worker (dead, silent for
    /// the lease, or holding it unknowingly) and run again as a new attempt; its `finished_ms`
    /// is when it was taken back. dagrid's, like `retrying`.
    Lost,
}

impl StepStatus {
    /// True once the step can change no more within this attempt.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Aborted
                | StepStatus::Lost
        )
    }

    /// The lowercase name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Retrying => "retrying",
            StepStatus::Aborted => "aborted",
            StepStatus::Lost => "lost",
        }
    }
}

/// The state of one step of a run, kept in the run hash under `s:<step name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepState {
    /// Where the step is in its life.
    pub status: StepStatus,
    /// 1 for the first attempt; 0 while never queued.
    #[serde(default)]
    pub attempt: u32,
    /// The fencing token of the current attempt: reports carrying another token are stale.
    #[serde(default)]
    pub token: Option<String>,
    /// The worker running (or that ran) the current attempt.
    #[serde(default)]
    pub worker: Option<String>,
    /// When the current attempt entered the ready stream (ms).
    #[serde(default)]
    pub queued_ms: Option<u64>,
    /// When its process started (ms).
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// When it finished (ms).
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// The process's exit code; absent when killed by a signal or never started.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the step failed or was skipped, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// The step's `output` variable and its value (trimmed stdout), once it succeeded.
    #[serde(default)]
    pub output: Option<(String, String)>,
    /// Where the worker wrote the full log (a path on the worker's machine).
    #[serde(default)]
    pub log_path: Option<String>,
    /// While `retrying`: when the next attempt is due (ms).
    #[serde(default)]
    pub retry_at_ms: Option<u64>,
    /// How many attempts of this step were lost with their worker (reclaimed after its
    /// heartbeat stopped).
    #[serde(default)]
    pub lost: u32,
    /// Set by a manual retry with `--ignore-preconditions` (`POST /api/v1/runs/{id}/retry`):
    /// the next attempt runs even if the step's `preconditions` do not hold; copied into its
    /// [`StepTask::ignore_preconditions`].
    #[serde(default)]
    pub ignore_preconditions: bool,
    /// Set when the step failed or was skipped and its `continueOn` covers that (Dagu
    /// `continueOn.failure`, `skipped`, `exitCode`, `output`): its dependants run as if it had
    /// succeeded.
    #[serde(default)]
    pub continued: bool,
    /// Set on the step whose worker found the DAG's `preconditions` not holding: the run
    /// ended `aborted` with no step run.
    #[serde(default)]
    pub dag_preconditions_unmet: bool,
    /// Set on a handler step (Dagu `handlerOn`): which handler it is. Absent on main steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<crate::dag::HandlerOn>,
    /// On a handler step queued at least once: the run status it runs for, which is its
    /// `DAG_RUN_STATUS` (`succeeded`, `failed` or `aborted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag_run_status: Option<RunStatus>,
    /// The step's earlier attempts, oldest first, at most [`AttemptRecord::KEEP`]: appended
    /// when an attempt is superseded (a `retryPolicy` retry, a lost worker, a manual retry).
    /// Empty (and not stored) for a step that ran once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
    /// The attempts made before the last manual retry (`POST /api/v1/runs/{id}/retry`): the
    /// step's `retryPolicy` limit and the lost-worker cap count from there, so a manual retry
    /// gets the full policy again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// Executions of the step so far that its `repeatPolicy` ran again (Dagu's done count
    /// before the current execution): attempts that are neither retries nor lost-worker
    /// re-runs, for the policy's `limit`, its backoff and the `retryPolicy` count. Reset by
    /// a manual retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// On a call step (Dagu `call:`) whose child runs were created: how many (distinct) child
    /// runs its current attempt waits for (`GET /api/v1/runs?parent=<run id>` lists them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub children: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One superseded attempt of a step, as kept in [`StepState::history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// How it ended (`failed`, `aborted`, `skipped`, `succeeded`, or `lost`: taken back from
    /// its worker, `finished_ms` then being when it was taken back).
    pub status: StepStatus,
    /// The worker that ran it.
    #[serde(default)]
    pub worker: Option<String>,
    /// When it entered the ready stream (ms).
    #[serde(default)]
    pub queued_ms: Option<u64>,
    /// When its process started (ms).
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// When it finished (ms).
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Its exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Its error, cut to [`AttemptRecord::MAX_ERROR`] bytes.
    #[serde(default)]
    pub error: Option<String>,
    /// Its log file on the worker's machine (`<step>.<attempt>.log`).
    #[serde(default)]
    pub log_path: Option<String>,
}

impl AttemptRecord {
    /// Most records kept per step (the oldest go first), so a run hash stays small.
    pub const KEEP: usize = 10;
    /// Longest error kept in a record (bytes).
    pub const MAX_ERROR: usize = 240;

    /// The record of `s`'s current attempt.
    pub fn of(s: &StepState) -> Self {
        let error = s.error.as_ref().map(|e| {
            let mut cut = e.len().min(Self::MAX_ERROR);
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e[..cut].to_string()
        });
        Self {
            attempt: s.attempt,
            status: s.status,
            worker: s.worker.clone(),
            queued_ms: s.queued_ms,
            started_ms: s.started_ms,
            finished_ms: s.finished_ms,
            exit_code: s.exit_code,
            error,
            log_path: s.log_path.clone(),
        }
    }
}

impl StepState {
    /// Appends the current attempt to [`StepState::history`] (when it was ever queued),
    /// dropping the oldest records beyond [`AttemptRecord::KEEP`].
    pub fn supersede(&mut self) {
        if self.attempt == 0 {
            return;
        }
        let record = AttemptRecord::of(self);
        self.history.push(record);
        let over = self.history.len().saturating_sub(AttemptRecord::KEEP);
        self.history.drain(..over);
    }
}

impl StepState {
    /// A step that waits for its dependencies.
    pub fn pending() -> Self {
        Self {
            status: StepStatus::Pending,
            attempt: 0,
            token: None,
            worker: None,
            queued_ms: None,
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            error: None,
            output: None,
            log_path: None,
            retry_at_ms: None,
            lost: 0,
            ignore_preconditions: false,
            handler: None,
            dag_run_status: None,
            history: Vec::new(),
            attempt_base: 0,
            children: 0,
            repeats: 0,
            continued: false,
            dag_preconditions_unmet: false,
        }
    }
}

/// A run as read back from its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id ([`crate::run_id`]: 26 characters; 36, a UUID's text form, for runs made by
    /// earlier versions).
    pub id: String,
    /// DAG name.
    pub dag: String,
    /// Digest of the DAG version.
    pub spec: String,
    /// Current status.
    pub status: RunStatus,
    /// Params bound at submit time, in declared order.
    pub params: Vec<BoundParam>,
    /// Creation time (ms).
    pub created_ms: u64,
    /// Start time (ms).
    pub started_ms: Option<u64>,
    /// Finish time (ms).
    pub finished_ms: Option<u64>,
    /// Compare-and-set version.
    pub version: u64,
    /// Step states by step name.
    pub steps: BTreeMap<String, StepState>,
    /// Priority.
    pub priority: Priority,
    /// The worker selector of its DAG version, canonical (field `ws`; empty: any worker): with
    /// [`RunRecord::priority`] it names the ready stream of its steps
    /// ([`crate::Keys::ready_of`]).
    #[serde(default)]
    pub selector: String,
    /// The queue the run is admitted through.
    pub queue: String,
    /// The DAG's `maxActiveRuns` when it applies apart from the queue's (0: none); the run
    /// counts in its DAG's active set ([`crate::redis::keys::Keys::active_dag`]) only when > 0.
    pub dag_limit: u32,
    /// Why it is still queued, while it waits (delayed, queue paused, no capacity).
    pub reason: Option<String>,
    /// When a delayed run is due (ms).
    pub due_ms: Option<u64>,
    /// The dedup key it holds, as its `dedup` field names it: the key's digest, or the whole
    /// key name in runs queued by earlier versions ([`crate::Keys::dedup_named`] gives the key).
    pub dedup_key: Option<String>,
    /// How long the dedup key outlives a successful finish (ms).
    pub dedup_window_ms: u64,
    /// `api`, `batch`, `schedule` or `retry`.
    pub trigger: String,
    /// The cron slot a scheduled run was fired for (ms).
    pub slot_ms: Option<u64>,
    /// Ready-stream entry id of each queued or running step, by step name (the `e:<step>`
    /// fields).
    pub entries: BTreeMap<String, String>,
    /// Automatic retries done under the DAG's `retry_policy` ([`run_field::AUTO_RETRIES`]).
    #[serde(default)]
    pub auto_retries: u32,
    /// When the next automatic retry of this failed run is due (ms).
    #[serde(default)]
    pub retry_at_ms: Option<u64>,
    /// The DAG-level values the run evaluated once (field `ev`), when it has.
    pub resolved: Option<Resolved>,
    /// For a child run of a call step: its parent (fields `pr`, `ps`, `pd`).
    #[serde(default)]
    pub parent: Option<ParentLink>,
}

/// What a finished child run gave its parent's call step (field `r:<child id>` of
/// [`crate::redis::keys::Keys::fan`]), written by the transition that finishes the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildResult {
    /// The child's final status.
    #[serde(rename = "s")]
    pub status: RunStatus,
    /// The child DAG's name.
    #[serde(rename = "n")]
    pub dag: String,
    /// The child's params as one line (`NAME=value` or the value, space-separated).
    #[serde(rename = "p", default)]
    pub params: String,
    /// The child's outputs: the `output` variables of its steps that succeeded, as Dagu's
    /// `outputs` map has them.
    #[serde(rename = "o", default)]
    pub outputs: Vec<(String, String)>,
}

/// Where a child run came from: the call step of its parent run (Dagu's parent/child link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParentLink {
    /// The parent run's id (run hash field `pr`).
    pub run: String,
    /// The parent's call step (field `ps`).
    pub step: String,
    /// How deep the child is: 1 for a child of a top-level run (field `pd`); at most
    /// [`crate::dag::MAX_CALL_DEPTH`].
    pub depth: u32,
}

/// Why a run hash could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A field that every run has is missing.
    #[error("run hash lacks field {0}")]
    Missing(&'static str),
    /// A field does not hold what it should.
    #[error("run hash field {field} is malformed: {reason}")]
    Malformed {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// One step attempt, as put on the ready stream for a worker: everything the worker needs to
/// run it, so that workers never read run state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTask {
    /// Run id.
    pub run_id: String,
    /// DAG name (for `DAG_NAME` and the log path).
    pub dag: String,
    /// Step name.
    pub step: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Fencing token of this attempt; the worker echoes it in its reports.
    pub token: String,
    /// The step's `command`, unexpanded.
    #[serde(default)]
    pub command: Option<String>,
    /// The step's `script`.
    #[serde(default)]
    pub script: Option<String>,
    /// The step's `shell` (or the DAG's); `None`: the worker's default (its `$SHELL`, else
    /// `sh`, with `-e` for the sh family, as in Dagu).
    #[serde(default)]
    pub shell: Option<String>,
    /// The step's working directory, unexpanded.
    #[serde(default)]
    pub dir: Option<String>,
    /// Environment in evaluation order, later entries winning: Dagu's variables
    /// (`DAG_RUN_STATUS` too for a handler step), params, DAG `env`, outputs of earlier steps,
    /// step `env`. Only the entries listed in [`StepTask::expand`] are expanded by the worker
    /// (and may refer to earlier ones as `${NAME}`); every other value is data, set as it is.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Indexes into [`StepTask::env`] of the entries whose values are DAG-authored text that
    /// the worker expands (the DAG's and the step's `env`). Values that come from callers or
    /// from steps (params, outputs, Dagu's variables) are never listed: they are inserted
    /// verbatim and never expanded again, so a param `${DAGRID_REDIS_URL}` stays that text.
    /// Missing (empty): nothing is expanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expand: Vec<u32>,
    /// Positional params, `$1..$n`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The `output` variable that captures trimmed stdout.
    #[serde(default)]
    pub output: Option<String>,
    /// When this attempt was queued (ms), for the dispatch latency.
    pub queued_ms: u64,
    /// The run's priority: the ready stream this task is on ([`crate::redis::keys::Keys::ready`]).
    #[serde(default)]
    pub priority: Priority,
    /// Longest this attempt may run (step `timeoutSec`, ms); `None`: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The signal that stops the step (step `signalOnStop`, a name such as `SIGINT`); `None`:
    /// SIGTERM.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Grace between the stop signal and SIGKILL (DAG `maxCleanUpTimeSec`, ms).
    #[serde(default = "default_cleanup_ms")]
    pub cleanup_ms: u64,
    /// Run the step without checking its `preconditions` (a manual retry asked so; see
    /// [`StepState::ignore_preconditions`]).
    #[serde(default)]
    pub ignore_preconditions: bool,
    /// The step's `preconditions`, checked by the worker before it starts the process (unless
    /// [`StepTask::ignore_preconditions`]); one that does not hold makes the attempt
    /// [`ReportKind::Skipped`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preconditions: Vec<crate::dag::Condition>,
    /// The DAG's `preconditions`, carried by the run's first task only (checked once per run,
    /// before any step starts, whatever [`StepTask::ignore_preconditions`] says); one that does
    /// not hold makes the attempt [`ReportKind::DagPreconditionsUnmet`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dag_preconditions: Vec<crate::dag::Condition>,
    /// The step's `continueOn.output` patterns: when the attempt fails, the worker looks for
    /// them in its output and says in [`StepReport::output_matched`] whether one was found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continue_on_output: Vec<String>,
    /// The step's `repeatPolicy`: after a succeeded or failed attempt, the worker evaluates
    /// its check and says in [`StepReport::repeat`] whether to run the step again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<crate::dag::RepeatPolicy>,
    /// The step's `call:` (a sub-DAG step): the worker runs no process, it expands the child
    /// runs' params and answers [`ReportKind::Call`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<crate::dag::Call>,
    /// The DAG's `maxOutputSize` (bytes): the most stdout the `output` variable captures;
    /// `None`: [`crate::dag::DEFAULT_MAX_OUTPUT_SIZE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_size: Option<u64>,
    /// [`StepState::repeats`] when the attempt was queued: with the `repeatPolicy`'s `limit`,
    /// the worker skips the check after the last execution allowed (as Dagu does).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// The DAG's `dotenv` and `working_dir`, and the run's once-per-run values (see
    /// [`DagValues`]). Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "DagValues::is_empty")]
    pub dag_values: DagValues,
}

/// What an attempt gets from its DAG's top level beyond `env`: Dagu's `dotenv` files and
/// `working_dir`, which the worker applies to every attempt, and the values a run evaluates
/// once: DAG `env` values with backtick commands and typed params with `eval`
/// ([`crate::dag::Dag::evaluates_once`]). The worker of the run's first task evaluates them
/// ([`DagValues::evaluate`]) and reports them; the coordinator stores them in the run
/// ([`run_field::RESOLVED`]) and every later task of the run carries them
/// ([`DagValues::resolved`]), so every step, handler and retry sees the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagValues {
    /// Dagu `dotenv`: files of `NAME=value` lines loaded under the attempt's environment
    /// (relative paths against [`DagValues::working_dir`], else the worker's directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dotenv: Vec<String>,
    /// Dagu DAG-level `working_dir`: the directory of a step without `dir`, and the base of a
    /// relative `dir`; unexpanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Set on the task that evaluates the run's values (only one task of the run at a time
    /// carries it, until they are stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<Evaluate>,
    /// The run's evaluated values, already applied to [`StepTask::env`] and
    /// [`StepTask::args`]; on the evaluating task, set by its worker and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
}

impl DagValues {
    /// Nothing to apply.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dotenv.is_empty()
            && self.working_dir.is_none()
            && self.evaluate.is_none()
            && self.resolved.is_none()
    }
}

/// What the evaluating task computes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluate {
    /// The index in [`StepTask::env`] where the DAG's `env` entries start: the computed
    /// params are inserted there.
    #[serde(default)]
    pub at: u32,
    /// Indexes into [`StepTask::env`] of the DAG's `env` entries, in order (all of them are
    /// evaluated, so later steps never expand them again).
    #[serde(default)]
    pub env: Vec<u32>,
    /// The typed params whose `eval` computes their value (not given by the caller), in
    /// declared order.
    #[serde(default)]
    pub params: Vec<crate::dag::ParamDef>,
}

/// The values a run evaluated once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The DAG's `env` values, one per entry, in order.
    #[serde(rename = "e", default)]
    pub env: Vec<String>,
    /// The params computed by `eval`: (name, value), in declared order.
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
}

fn default_cleanup_ms() -> u64 {
    crate::dag::DEFAULT_CLEANUP_MS
}

/// What a report says happened to a step attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// The process started.
    Started,
    /// The process exited 0.
    Succeeded,
    /// The process exited non-zero, was killed, timed out or could not start.
    Failed,
    /// The attempt's worker stopped sending heartbeats and its ready entry was reclaimed (sent
    /// by a coordinator, not a worker). The step runs again as a new attempt.
    Lost,
    /// The worker handed the attempt back at shutdown without finishing it. The step runs
    /// again with a new token and the same attempt number (a shutdown burns no attempt).
    Released,
    /// The step's `preconditions` did not hold: its process was not started and the step is
    /// skipped; `error` says which condition and what it got.
    Skipped,
    /// The DAG's `preconditions` (carried by the run's first task) did not hold: no step runs
    /// and the run ends `aborted`; `error` says which condition and what it got.
    #[serde(rename = "dagpreconditionsunmet")]
    DagPreconditionsUnmet,
    /// A call step's worker expanded its child runs ([`StepReport::call`]); sent through the
    /// results stream, where a coordinator creates the children before applying it. The step
    /// is then `running` until its children have all finished.
    Call,
}

/// A worker's report on a step attempt, sent on the results stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// Run id.
    pub run_id: String,
    /// Step name.
    pub step: String,
    /// Attempt number the report is about.
    pub attempt: u32,
    /// Fencing token of that attempt.
    pub token: String,
    /// Reporting worker.
    pub worker: String,
    /// What happened.
    pub kind: ReportKind,
    /// When the process started (ms).
    pub started_ms: u64,
    /// When it finished (ms); absent for [`ReportKind::Started`].
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Exit code; absent when killed by a signal or never started.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it failed, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// The captured `output` variable.
    #[serde(default)]
    pub output: Option<(String, String)>,
    /// The full log's path on the worker's machine.
    #[serde(default)]
    pub log_path: Option<String>,
    /// For a failed attempt of a step with `continueOn.output`: true when a line of its output
    /// matched one of the patterns ([`StepTask::continue_on_output`]).
    #[serde(default)]
    pub output_matched: bool,
    /// For a succeeded or failed attempt of a step with a `repeatPolicy`: its check says to
    /// run the step again (the coordinator still applies the policy's `limit`, and a
    /// `retryPolicy` retry of a failure comes first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// The run's values, from the attempt that evaluated them ([`DagValues::evaluate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    /// With [`ReportKind::Call`]: the child runs to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<crate::dag::CallPlan>,
    /// With [`ReportKind::Call`], set by the coordinator that created the children: how many
    /// distinct child runs the step waits for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub children: u32,
}

/// A registered DAG version, in [`crate::redis::keys::Keys::dags`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagRecord {
    /// Digest of the parsed DAG ([`crate::redis::keys::Keys::spec`]).
    pub digest: String,
    /// The YAML source as registered.
    pub source: String,
    /// When it was registered (ms).
    pub updated_ms: u64,
}

/// A worker's heartbeat, in [`crate::redis::keys::Keys::worker`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// Unique per process start: `<host>-<pid>-<random>`.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// dagrid version.
    pub version: String,
    /// Concurrency slots.
    pub slots_total: u32,
    /// Slots running a step now.
    pub slots_busy: u32,
    /// Process CPU use, percent of one core.
    pub cpu_percent: f32,
    /// Process resident memory (bytes).
    pub memory_bytes: u64,
    /// When the worker started (ms).
    pub started_ms: u64,
    /// When this heartbeat was sent (ms).
    pub sent_ms: u64,
    /// The worker's heartbeat interval (ms); 0 in heartbeats of workers older than this field.
    #[serde(default)]
    pub interval_ms: u64,
    /// When the claim loop last started or finished a read of the ready streams (ms since the
    /// epoch); 0 when unknown (an older worker, or no read yet).
    #[serde(default)]
    pub claim_progress_ms: u64,
    /// True when the worker judges its claim loop stalled: it has free slots but started or
    /// finished no read of the ready streams for 10 s (the worker's `health` module has the
    /// rule). False in heartbeats of older workers.
    #[serde(default)]
    pub stalled: bool,
    /// True once the worker is shutting down (it claims nothing more). False in heartbeats of
    /// older workers.
    #[serde(default)]
    pub draining: bool,
    /// True when the worker's Redis connections carry its id as their client name (Redis
    /// accepted `CLIENT SETNAME`): only then does the reaper take the absence of such a
    /// connection as its death before the lease. False in heartbeats of older workers.
    #[serde(default)]
    pub named: bool,
    /// The worker's labels (`dagrid worker --label key=value`), which DAGs' worker selectors
    /// must be contained in; empty in heartbeats of older workers and of workers without labels.
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>, example = json!({"gpu": "true"}))]
    pub labels: crate::labels::Labels,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run event is read the same in the form every version wrote (no step, no attempt)
    /// and in the one with every field, empty step and attempt included, that keeps the
    /// stream's entries alike.
    #[test]
    fn run_events_read_alike_with_or_without_empty_step_fields() {
        let old: [(&str, &[u8]); 4] = [
            ("run", b"r"),
            ("dag", b"d"),
            ("status", b"queued"),
            ("at", b"7"),
        ];
        let new: [(&str, &[u8]); 6] = [
            ("run", b"r"),
            ("dag", b"d"),
            ("step", b""),
            ("status", b"queued"),
            ("attempt", b""),
            ("at", b"7"),
        ];
        let a = Event::from_fields(old).unwrap();
        assert_eq!(a, Event::from_fields(new).unwrap());
        assert_eq!((a.step, a.attempt, a.at_ms), (None, None, 7));
        let step: [(&str, &[u8]); 6] = [
            ("run", b"r"),
            ("dag", b"d"),
            ("step", b"s1"),
            ("status", b"queued"),
            ("attempt", b"1"),
            ("at", b"7"),
        ];
        let s = Event::from_fields(step).unwrap();
        assert_eq!((s.step.as_deref(), s.attempt), (Some("s1"), Some(1)));
        assert_eq!(Event::from_entry(step), vec![s], "no `rs`: one event");
    }

    /// An entry whose field `rs` is set carries the run's event too: before its step's when
    /// the run was queued, after it otherwise; an empty `rs` or a run entry carries nothing more.
    #[test]
    fn an_entry_with_a_run_status_holds_two_events() {
        let entry =
            |status: &'static [u8], rs: &'static [u8]| -> [(&'static str, &'static [u8]); 7] {
                [
                    ("run", b"r"),
                    ("dag", b"d"),
                    ("step", b"s1"),
                    ("status", status),
                    ("attempt", b"1"),
                    ("at", b"7"),
                    ("rs", rs),
                ]
            };
        let shape = |events: Vec<Event>| -> Vec<(Option<String>, String, u64)> {
            events
                .into_iter()
                .map(|e| (e.step, e.status, e.at_ms))
                .collect()
        };
        let step = |st: &str| (Some("s1".to_string()), st.to_string(), 7);
        let run = |st: &str| (None, st.to_string(), 7);
        assert_eq!(
            shape(Event::from_entry(entry(b"queued", b"queued"))),
            [run("queued"), step("queued")]
        );
        assert_eq!(
            shape(Event::from_entry(entry(b"succeeded", b"succeeded"))),
            [step("succeeded"), run("succeeded")]
        );
        assert_eq!(
            shape(Event::from_entry(entry(b"running", b""))),
            [step("running")]
        );
        let run_entry: [(&str, &[u8]); 7] = [
            ("run", b"r"),
            ("dag", b"d"),
            ("step", b""),
            ("status", b"aborted"),
            ("attempt", b""),
            ("at", b"7"),
            ("rs", b""),
        ];
        assert_eq!(shape(Event::from_entry(run_entry)), [run("aborted")]);
        assert!(Event::from_entry([("x", &b"y"[..])]).is_empty());
    }

    /// Packed entries hold their fields in field `e`: read as the same fields
    /// unpacked, including the run's `queued` that rides on the first step's event; a value
    /// that is not a pack is not an event.
    #[test]
    fn a_packed_entry_reads_as_its_fields() {
        let packed = Event::pack("r", "d", "s1", "queued", "1", "queued").unwrap();
        let fields: [(&str, &[u8]); 6] = [
            ("run", b"r"),
            ("dag", b"d"),
            ("step", b"s1"),
            ("status", b"queued"),
            ("attempt", b"1"),
            ("rs", b"queued"),
        ];
        let events = Event::from_entry([("e", packed.as_slice())]);
        assert_eq!(events, Event::from_entry(fields));
        assert_eq!(events.len(), 2, "the run's queued, then its step's");
        let run = Event::pack("r", "d", "", "queued", "", "").unwrap();
        let events = Event::from_entry([("e", run.as_slice())]);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].step.as_deref(), events[0].attempt), (None, None));
        assert!(Event::from_entry([("e", &b"\x91\xa1r"[..])]).is_empty());
    }

    #[test]
    fn status_names_round_trip() {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>().unwrap(), st);
        }
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn step_state_round_trips_through_msgpack() {
        let mut s = StepState::pending();
        s.output = Some(("X".into(), "1".into()));
        let back: StepState = decode(&encode(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}

/// One run or step state change, as written to the events stream by the script that made the
/// change (fields [`event_field`]) and sent as the JSON data of `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Run id.
    pub run: String,
    /// DAG name.
    pub dag: String,
    /// The step, for a step event; `None` for a run event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The new status (a run status for a run event, a step status for a step event).
    pub status: String,
    /// The step's attempt (step events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When the change was made (ms since the epoch).
    pub at_ms: u64,
}

impl Event {
    /// Reads an events-stream entry from its field/value pairs; `None` when `run`, `dag` or
    /// `status` is missing (an entry written by something else).
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Self> {
        let (mut run, mut dag, mut step, mut status, mut attempt, mut at_ms) =
            (None, None, None, None, None, 0);
        for (k, v) in fields {
            let text = || String::from_utf8_lossy(v).into_owned();
            match k {
                event_field::RUN => run = Some(text()),
                event_field::DAG => dag = Some(text()),
                // A run event: written with an empty step by this version, without one
                // by earlier versions.
                event_field::STEP if v.is_empty() => step = None,
                event_field::STEP => step = Some(text()),
                event_field::STATUS => status = Some(text()),
                event_field::ATTEMPT => attempt = text().parse().ok(),
                event_field::AT => at_ms = text().parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(Self {
            run: run?,
            dag: dag?,
            step,
            status: status?,
            attempt,
            at_ms,
        })
    }

    /// The events of one events-stream entry, in order: the event its fields describe
    /// ([`Event::from_fields`]) and, when its step's transition changed the run too (field `rs`
    /// not empty), the run's event, with the same time. The run's comes first when it is
    /// `queued` (a run is queued before its steps are), after the step's otherwise. Empty for
    /// an entry that is not an event.
    ///
    /// An entry of SUBMIT's or APPLY_TRANSITION's holds one field, `e`
    /// ([`event_field::PACKED`]), whose value ([`Event::pack`]) holds those fields; it is read
    /// as they are.
    pub fn from_entry<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<Self> {
        let fields: Vec<(&str, &[u8])> = fields.into_iter().collect();
        if let Some((_, packed)) = fields.iter().find(|(k, _)| *k == event_field::PACKED) {
            type Packed = (String, String, String, String, String, String);
            let Ok((run, dag, step, status, attempt, rs)) = decode::<Packed>(packed) else {
                return Vec::new();
            };
            return Self::expand(&[
                (event_field::RUN, run.as_bytes()),
                (event_field::DAG, dag.as_bytes()),
                (event_field::STEP, step.as_bytes()),
                (event_field::STATUS, status.as_bytes()),
                (event_field::ATTEMPT, attempt.as_bytes()),
                (event_field::RUN_STATUS, rs.as_bytes()),
            ]);
        }
        Self::expand(&fields)
    }

    /// The value of field `e` ([`event_field::PACKED`]) of an events-stream entry that holds
    /// these fields (see [`event_field`]; `step` and `attempt` empty for a run's own entry,
    /// `rs` empty when the run did not change): a MessagePack array of the six strings, in
    /// that order. SUBMIT and APPLY_TRANSITION write their entries in this form (one argument
    /// an entry costs Redis instead of twelve); read back by [`Event::from_entry`].
    pub fn pack(
        run: &str,
        dag: &str,
        step: &str,
        status: &str,
        attempt: &str,
        rs: &str,
    ) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        encode(&(run, dag, step, status, attempt, rs))
    }

    /// [`Event::from_entry`] of an entry's field/value pairs.
    fn expand(fields: &[(&str, &[u8])]) -> Vec<Self> {
        let Some(first) = Self::from_fields(fields.iter().copied()) else {
            return Vec::new();
        };
        let run_status = fields
            .iter()
            .find(|(k, _)| *k == event_field::RUN_STATUS)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .filter(|s| !s.is_empty() && first.step.is_some());
        let Some(status) = run_status else {
            return vec![first];
        };
        let run = Self {
            run: first.run.clone(),
            dag: first.dag.clone(),
            step: None,
            status,
            attempt: None,
            at_ms: first.at_ms,
        };
        if run.status == RunStatus::Queued.as_str() {
            vec![run, first]
        } else {
            vec![first, run]
        }
    }

    /// True for a run event whose status is final (succeeded, failed, aborted).
    pub fn is_final_run(&self) -> bool {
        self.step.is_none()
            && self
                .status
                .parse::<RunStatus>()
                .is_ok_and(RunStatus::is_final)
    }
}
