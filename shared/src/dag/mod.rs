//! DAG files: Dagu's YAML format (dagu-org/dagu) parsed and validated into a [`Dag`]: steps in
//! file order, declared params, DAG-level env (left unexpanded: the worker expands it at run
//! time) and the dependency graph. Every problem is reported at once as [`DagErrors`], each
//! located by a field path (`steps[2].depends`), so a file is fixed in one pass.
//!
//! What is read and how, key by key (supported, not yet supported, informational, unknown), is
//! in docs/dag-format.md; `yaml_keys.rs` lists the keys of each level, `guard.rs` bounds
//! hostile input before the YAML parser sees it.

mod call;
mod call_step;
mod conditions;
mod defaults;
mod env;
mod graph;
mod guard;
mod handlers;
mod names;
mod output;
mod params;
mod parse;
mod queueing;
mod reliability;
mod repeat;
mod report;
mod runpol;
mod step;
#[cfg(test)]
mod tests;
mod value;
mod yaml_keys;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use call::{
    Call, CallPlan, Parallel, ParallelItem, ParallelItems, DEFAULT_MAX_CONCURRENT, MAX_CALL_DEPTH,
    MAX_PARALLEL_ITEMS,
};
pub use conditions::{expected_matches, output_matches, Condition, ContinueOn, REGEX_PREFIX};
pub use handlers::{HandlerOn, Handlers};
pub use queueing::{BadDedupPolicy, BadPriority, DedupPolicy, Priority};
pub use repeat::{RepeatMode, RepeatPolicy};

/// The rule DAG and queue names follow, for messages.
pub const NAME_RULE: &str =
    "use 1 to 64 of A-Z a-z 0-9 _ . - (the name is used in Redis keys and URLs)";

/// Why `name` is not a valid DAG or queue name (`[A-Za-z0-9_.-]{1,64}`, not only dots), if it
/// is not. The reason reads after "it" ("it is empty"); follow it with [`NAME_RULE`].
pub fn name_problem(name: &str) -> Option<&'static str> {
    names::dag_name_problem(name)
}

/// The largest number of steps one DAG may have (Dagu has no limit; dagrid keeps per-run state
/// in Redis and bounds it).
pub const MAX_STEPS: usize = 1000;

/// The largest number of problems one [`DagErrors`] lists; further problems are counted in a
/// final line instead.
pub const MAX_ERRORS: usize = 200;

/// The largest DAG file accepted, in bytes (1 MiB); a larger one is refused before parsing.
pub const MAX_DAG_BYTES: usize = 1024 * 1024;

/// The most YAML documents (`---` separated) a DAG file may hold: its DAG and 99 local DAGs.
pub const MAX_DOCUMENTS: usize = 100;

/// The deepest nesting of YAML flow collections (`[…]`, `{…}`) accepted; checked by a scan
/// before parsing, because the YAML parser's cost grows with this depth times the line length.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The largest value of one param, in bytes (32 KiB): a step gets it in its environment and in
/// `${NAME}` expansions of its command, and Linux refuses a single argument or environment
/// string over 128 KiB (`MAX_ARG_STRLEN`, "Argument list too long").
pub const MAX_PARAM_VALUE_BYTES: usize = 32 * 1024;

/// The largest total of a run's param values, in bytes (64 KiB), defaults included.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;

/// A parsed and validated DAG. Steps are in file order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dag {
    /// The DAG's name (Dagu `name`, else the file stem); it matches `[A-Za-z0-9_.-]{1,64}`
    /// because it is used in Redis keys and URLs.
    pub name: String,
    /// Free text for people (Dagu `description`).
    pub description: Option<String>,
    /// How steps are ordered (Dagu `type`): what the file says; without `type:`,
    /// [`DagKind::Chain`] unless a step has a `depends:` key (then [`DagKind::Graph`], with a
    /// warning), see the module doc.
    pub kind: DagKind,
    /// Declared params in declared order (Dagu `params`); callers bind values with
    /// [`Dag::bind_params`].
    pub params: Vec<ParamDef>,
    /// DAG-level environment in declared order (Dagu `env`); values are NOT expanded here:
    /// the worker evaluates them in order at run time, so later ones can use earlier ones.
    pub env: Vec<EnvVar>,
    /// The steps in file order (by name when `steps:` is a map); [`Step::depends`] already
    /// includes a chain's implicit edges.
    pub steps: Vec<Step>,
    /// Non-fatal remarks, e.g. `tags: ignored by dagrid (informational)`.
    pub warnings: Vec<String>,
    /// Default priority of its runs (dagrid `priority:`; `None`: normal).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The named queue its runs are admitted through (Dagu `queue`); `None`: a queue of its
    /// own, named after the DAG.
    #[serde(default)]
    pub queue: Option<String>,
    /// Most runs of this DAG active at once (Dagu `maxActiveRuns`); `None`: no limit.
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Most steps of one run queued or running at once (Dagu `maxActiveSteps`); `None`: no limit.
    #[serde(default)]
    pub max_active_steps: Option<u32>,
    /// Param dedup policy (dagrid `dedup:`); `None`: [`DedupPolicy::Active`].
    #[serde(default)]
    pub dedup: Option<DedupPolicy>,
    /// Cron expressions as written (Dagu `schedule`), validated by
    /// [`crate::schedule::CronSchedule::parse`].
    #[serde(default)]
    pub schedule: Vec<String>,
    /// IANA time zone of the schedules without `CRON_TZ=` (dagrid `timezone:`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// How far back missed cron slots are fired after downtime (Dagu `catchupWindow`, ms);
    /// `None`: missed slots are not fired.
    #[serde(default)]
    pub catchup_window_ms: Option<u64>,
    /// What a cron slot does while the previous scheduled run is active (Dagu `overlapPolicy`).
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// Longest a run may take from its first step's start (Dagu DAG-level `timeoutSec`, ms);
    /// when it passes, the run's running steps are stopped and the run fails. `None`: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How long a stopped step gets between its stop signal and SIGKILL (Dagu
    /// `maxCleanUpTimeSec`, ms); `None`: [`DEFAULT_CLEANUP_MS`].
    #[serde(default)]
    pub max_cleanup_ms: Option<u64>,
    /// Steps run after the main steps (Dagu `handlerOn`): the one matching the outcome, then
    /// `exit`. Their names differ from every main step's name.
    #[serde(default)]
    pub handlers: Handlers,
    /// DAG-level preconditions (Dagu `preconditions`), checked on a worker before the run's
    /// first step starts; when one does not hold, no step runs and the run ends `aborted`.
    /// Left out of the encoding when empty, so the digest of a DAG without them is unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preconditions: Vec<Condition>,
    /// Most bytes of stdout a step's `output` variable may capture (Dagu `maxOutputSize`);
    /// a step that writes more fails. `None`: [`DEFAULT_MAX_OUTPUT_SIZE`]. Left out of the
    /// encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_size: Option<u64>,
    /// The labels a worker must have to run this DAG's steps (Dagu `workerSelector` /
    /// `worker_selector`, a map; values are read as text, `true` as `"true"`); empty: any
    /// worker. Its steps go to the selector's own ready streams ([`crate::Keys::ready_of`]).
    /// Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "crate::labels::Labels::is_empty")]
    pub worker_selector: crate::labels::Labels,
    /// Run-level policies (Dagu `retry_policy`, `delay_sec`, `skip_if_successful`,
    /// `schedule.stop`/`restart`, `restart_wait_sec`, one-off `at` entries); see [`RunPolicy`].
    /// Left out of the encoding when unset, so the digest of a DAG without them is unchanged.
    #[serde(default, skip_serializing_if = "RunPolicy::is_unset")]
    pub run_policy: RunPolicy,
    /// Dagu `dotenv`: files of `NAME=value` lines the worker loads under every step's
    /// environment (before params and `env`, so `env` can use them); relative paths are
    /// relative to `working_dir` (then `.env` there is loaded first, as in Dagu), else to the
    /// worker's directory. A missing file is skipped. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dotenv: Vec<String>,
    /// Dagu DAG-level `working_dir`: the directory of every step without a `dir`, and the base
    /// of a relative step `dir`; `$VAR` and a leading `~` are expanded on the worker, and a
    /// relative path is relative to the worker's directory. Left out of the encoding when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The local DAGs of a multi-document file (its later `---` documents, Dagu's local
    /// sub-DAGs), parsed, each named `<this DAG>.<its name>`; registered with this DAG as DAGs
    /// of their own. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals: Vec<Dag>,
}

/// The run-level keys of a DAG file (Dagu's top-level `retry_policy`, `delay_sec`,
/// `skip_if_successful`, `restart_wait_sec`, and the `stop`, `restart` and one-off `at` entries
/// of `schedule`). Every field is left out of the encoding when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunPolicy {
    /// Dagu DAG-level `retry_policy`: a run that ends `failed` is retried (its failed and
    /// aborted steps and everything downstream, as `dagrid retry` does) after
    /// `delay_ms(n)` for the n-th retry, at most `limit` times. `exit_codes` is always empty.
    /// Dagu's defaults: `interval_sec` 60, `max_interval_sec` 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Dagu `delay_sec` (ms): how long a new run waits before its first step is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Dagu `skip_if_successful`: a cron slot fires nothing when the DAG's latest run
    /// succeeded and was created (or fired) since the previous slot. Manual runs always run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_if_successful: bool,
    /// Dagu `schedule.stop`: cron expressions at which the DAG's queued and running runs are
    /// stopped (`aborted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Dagu `schedule.restart`: cron expressions at which the DAG's active runs are stopped
    /// and a new run is started [`RunPolicy::restart_wait_ms`] later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
    /// Dagu `restart_wait_sec` (ms): the wait between a restart's stop and its new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_wait_ms: Option<u64>,
    /// Dagu's one-off start entries (`schedule: [{at: 2026-03-01T09:00:00+09:00}]`), as ms
    /// since the epoch, ascending: each fires once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_ms: Vec<u64>,
}

impl RunPolicy {
    /// True when no run-level key was given (the field is then left out of the encoding).
    pub fn is_unset(&self) -> bool {
        *self == RunPolicy::default()
    }
}

/// The most stdout an `output` variable captures when the DAG sets no `maxOutputSize`
/// (1 MiB, Dagu's default).
pub const DEFAULT_MAX_OUTPUT_SIZE: u64 = 1024 * 1024;

/// The largest `maxOutputSize` accepted (16 MiB): a captured value is kept in the worker's
/// memory while the step runs, stored in the run's hash and set in the environment of the
/// steps after it.
pub const MAX_OUTPUT_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// The grace between a step's stop signal and SIGKILL when the DAG sets no
/// `maxCleanUpTimeSec` (5 s).
pub const DEFAULT_CLEANUP_MS: u64 = 5_000;

/// Dagu's step `retryPolicy`: how often and when a failed step is run again.
///
/// The wait before retry `n` (1 for the first retry) is `interval_ms × backoff^(n-1)`, capped at
/// `max_interval_ms`. Waits go through the delayed set in Redis, never a process's memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Most retries after the first attempt (Dagu `limit`).
    pub limit: u32,
    /// Wait before the first retry (Dagu `intervalSec`, ms).
    pub interval_ms: u64,
    /// Growth factor of the wait, in thousandths (Dagu `backoff`: `true` is 2.0, a number is
    /// that factor; 1000, no growth, when absent or `false`).
    pub backoff_milli: u32,
    /// Upper bound of the wait (Dagu `maxIntervalSec`, ms); `None`: unbounded.
    pub max_interval_ms: Option<u64>,
    /// The exit codes that are retried (Dagu `exitCode`); empty: every failure is retried.
    pub exit_codes: Vec<i32>,
}

impl RetryPolicy {
    /// The wait before retry `n` (1 for the first retry), in ms; at most
    /// [`crate::duration::MAX_DURATION_MS`], so a growing wait never passes year 9999.
    pub fn delay_ms(&self, n: u32) -> u64 {
        self.raw_delay_ms(n).min(crate::duration::MAX_DURATION_MS)
    }

    fn raw_delay_ms(&self, n: u32) -> u64 {
        let factor = self.backoff_milli.max(1000) as f64 / 1000.0;
        let raw = self.interval_ms as f64 * factor.powi(n.saturating_sub(1).min(64) as i32);
        let capped = match self.max_interval_ms {
            Some(max) => raw.min(max as f64),
            None => raw,
        };
        if capped.is_finite() {
            capped.min(u64::MAX as f64) as u64
        } else {
            self.max_interval_ms.unwrap_or(u64::MAX)
        }
    }

    /// True when a failure with `exit_code` (`None`: killed by a signal, timed out or never
    /// started) may be retried under this policy: any failure without `exitCode`, else only the
    /// listed codes.
    pub fn retries_exit(&self, exit_code: Option<i32>) -> bool {
        self.exit_codes.is_empty() || exit_code.is_some_and(|c| self.exit_codes.contains(&c))
    }
}

/// Dagu's `overlapPolicy`: what a cron slot does while the DAG's previous scheduled run is
/// still queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// Fire nothing for that slot (the default).
    #[default]
    Skip,
    /// Start another run anyway.
    All,
    /// Keep the newest slot pending (in Redis) and fire it once the previous scheduled run is
    /// final; an older pending slot is dropped, and a previous run still queued is replaced
    /// (Dagu's `latest`: all but the most recent missed interval are discarded).
    Latest,
}

/// How a DAG orders its steps (Dagu `type:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DagKind {
    /// `type: graph`: order comes from `depends` only; steps without depends start at once.
    Graph,
    /// `type: chain`, and the default: a step depends on every step of the item before it in
    /// `steps:` (a nested list's members share an item), plus its own `depends`; `depends: []`
    /// removes the implicit edge.
    Chain,
}

/// One declared param (an item of Dagu `params`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ParamDef {
    /// The name steps read as `${NAME}` (and as an env var), or `None` for a positional param
    /// that steps read as `$1`, `$2`, … by its position among all params.
    pub name: Option<String>,
    /// The value used when the caller gives none (an opaque string, `""` for YAML null).
    pub default: String,
    /// Dagu's typed param entry (`- name: X` with `type`, `default`, `enum`, `required`, …):
    /// how a caller's value is checked at submit, and the `eval` that computes the value at
    /// run time. `None` for the plain forms. Left out of the encoding when absent, so the digest
    /// of a DAG without typed params is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed: Option<Box<TypedParam>>,
}

/// The type of a typed param (Dagu `type:`); values stay strings in the step's environment.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any text (the default).
    #[default]
    String,
    /// A whole number (64-bit), written in decimal: `" 42 "` is bound as `42`.
    Integer,
    /// A finite number: `1.50` is bound as `1.5`.
    Number,
    /// `true` or `false`, in any case; bound in lower case.
    Boolean,
}

/// Dagu's typed ("rich") param entry: `- name: X` plus at least one of `default`, `eval`,
/// `description`, `type`, `required`, `enum`, `minimum`, `maximum`, `min_length`,
/// `max_length`, `pattern` (`internal/core/spec/dparams_inline.go`). A caller's value is
/// checked against it when the run is submitted ([`Dag::bind_params`]): an error names the
/// param and what it accepts.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct TypedParam {
    /// Dagu `type` (default `string`).
    #[serde(default)]
    pub kind: ParamType,
    /// Dagu `description`, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Dagu `required`: a run must have a value (given, default or computed by `eval`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Whether the entry has a `default` (then [`ParamDef::default`] holds it, normalized to
    /// the type); without one the param is unset unless given or computed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_default: bool,
    /// Dagu `enum`: the allowed values, normalized to the type; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Dagu `minimum` (integer and number types), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<String>,
    /// Dagu `maximum` (integer and number types), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
    /// Dagu `min_length` (string type), in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Dagu `max_length` (string type), in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Dagu `pattern` (string type): a regular expression the value must contain a match of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Dagu `eval`: text evaluated at run time, once per run, on the worker of the run's
    /// first task (`${VAR}` expansions and backtick commands), when the caller gives no
    /// value; when it fails the `default` is used, and without one the attempt fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
}

/// One environment variable (an entry of Dagu `env`, DAG or step level).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvVar {
    /// The variable name; matches `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// The raw value as written, not expanded (`${VAR}` is expanded by the worker at run time).
    pub value: String,
}

/// One step of a DAG (an item of Dagu `steps`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// The step's unique name (Dagu `name`): 1 to 128 characters, no `/`, no control characters.
    /// For a step written without one, its `id` or a name generated as Dagu does (`cmd_2`).
    pub name: String,
    /// Free text for people (Dagu `description`).
    pub description: Option<String>,
    /// The command line to run (Dagu `command`; a list of commands is joined into one line
    /// `(c1) && (c2)`); at least one of `command` and `script` is set, and with both the
    /// command is the script's interpreter.
    pub command: Option<String>,
    /// An inline script run by `shell` or its shebang line (Dagu `script`).
    pub script: Option<String>,
    /// The shell that runs the command or script (Dagu `shell`, else the DAG's `shell`), e.g.
    /// `bash -e`; `None`: the worker's default (its `$SHELL`, else `sh`).
    pub shell: Option<String>,
    /// The working directory (Dagu `dir`, `workingDir` or `working_dir`).
    pub dir: Option<String>,
    /// Step-level environment in declared order (Dagu step `env`), overriding the DAG's.
    pub env: Vec<EnvVar>,
    /// Names of the steps this one waits for (Dagu `depends`), after a chain's implicit edge was
    /// added and ids were resolved to names; no duplicates.
    pub depends: Vec<String>,
    /// The variable that captures the step's trimmed stdout (Dagu `output`), without a leading `$`.
    pub output: Option<String>,
    /// When and how often a failure is retried (Dagu `retryPolicy`); `None`: never (a step whose
    /// worker died is still run again, see the coordinator's lost-step rule).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Longest one attempt may run (Dagu step `timeoutSec`, ms); the worker then stops its
    /// process group and the attempt fails (retried if `retry` allows). `None`: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The signal that stops the step (Dagu `signalOnStop`): one of SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGABRT, SIGKILL, upper case with `SIG` as the parser
    /// normalises it; `None`: SIGTERM. SIGKILL follows after the DAG's cleanup grace.
    #[serde(default)]
    pub signal_on_stop: Option<String>,
    /// Conditions checked by the worker before the step starts (Dagu `preconditions`); when one
    /// does not hold, the step is `skipped`. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preconditions: Vec<Condition>,
    /// When the step's dependants run although it failed or was skipped (Dagu `continueOn`).
    /// Left out of the encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on: Option<ContinueOn>,
    /// Runs the step again while or until a check holds (Dagu `repeatPolicy`); each
    /// execution is an attempt in the step's history, and the wait between them is a timer in
    /// Redis. Left out of the encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatPolicy>,
    /// The labels a worker must have to run this step (Dagu step `workerSelector` /
    /// `worker_selector`), replacing the DAG's [`Dag::worker_selector`] for this step;
    /// `Some` of an empty map (`{}`): any worker. `None`: the DAG's selector. Left out of the
    /// encoding when `None`, so the digest of a DAG without it is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_selector: Option<crate::labels::Labels>,
    /// Runs another DAG as child runs instead of a command (Dagu `call:` / `run:`, with
    /// `params:` and `parallel:`); `command` and `script` are then `None`. Left out of the
    /// encoding when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
}

/// One problem, located by a field path such as `steps[2].depends` or `params.FILE`, or by an
/// empty field for the whole file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DagError {
    /// Where the problem is: a dotted path with list indices (`steps[2].env[0]`), or `""` for
    /// the whole file (YAML syntax, IO).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl DagError {
    /// A problem at `field` (see [`DagError::field`]).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        DagError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// All problems found (never empty). Display: one [`DagError`] per line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct DagErrors(pub Vec<DagError>);

impl From<DagError> for DagErrors {
    fn from(error: DagError) -> Self {
        DagErrors(vec![error])
    }
}

fn lines(errors: &[DagError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A param value bound for one run: one per declared param, in declared order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BoundParam {
    /// The declared name, or `None` for a positional param.
    pub name: Option<String>,
    /// The caller's value, else the declared default; opaque (never interpreted).
    pub value: String,
}

impl Dag {
    /// Parse and validate YAML text. `default_name` is used when the file has no `name:` (callers pass the file stem).
    ///
    /// # Errors
    /// Every problem found (YAML syntax, wrong types, unknown or unsupported keys, invalid
    /// names, unknown or cyclic `depends`, …), each with its field path and the fix.
    pub fn parse(yaml: &str, default_name: &str) -> Result<Dag, DagErrors> {
        parse::parse_dag(yaml, default_name)
    }

    /// Read a file and parse it; the default name is the file stem; an IO error becomes a
    /// [`DagError`] with field `""`.
    ///
    /// # Errors
    /// The file cannot be read (or is not UTF-8), or any error of [`Dag::parse`].
    pub fn from_file(path: &Path) -> Result<Dag, DagErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            DagError::new(
                "",
                format!("cannot read DAG file {}: {err}", path.display()),
            )
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Dag::parse(&text, &stem)
    }

    /// True when a run evaluates DAG-level values once, on the worker of its first task: an
    /// `env` value with a backtick command, or a typed param with `eval`. See
    /// [`crate::model::DagValues`].
    #[must_use]
    pub fn evaluates_once(&self) -> bool {
        self.env.iter().any(|e| e.value.contains('`'))
            || self
                .params
                .iter()
                .any(|p| p.typed.as_ref().is_some_and(|t| t.eval.is_some()))
    }

    /// Index of a step by name.
    #[must_use]
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
    }

    /// The main step or handler step named `name`.
    #[must_use]
    pub fn step_or_handler(&self, name: &str) -> Option<&Step> {
        match self.step_index(name) {
            Some(index) => self.steps.get(index),
            None => self.handlers.named(name).map(|(_, step)| step),
        }
    }

    /// The canonical worker selector ([`crate::labels::Labels::canonical`], `k1=v1,k2=v2`) of
    /// the step or handler `step`: its own `workerSelector` when it has one (`""` for `{}`:
    /// any worker), else the DAG's. A name that is no step gets the DAG's. Its tasks go to
    /// [`crate::Keys::ready_of`] of the run's priority and this selector.
    #[must_use]
    pub fn selector_of(&self, step: &str) -> String {
        match self
            .step_or_handler(step)
            .and_then(|s| s.worker_selector.as_ref())
        {
            Some(own) => own.canonical(),
            None => self.worker_selector.canonical(),
        }
    }

    /// The distinct selectors of the DAG's steps and handlers, canonical: the DAG's own first
    /// (the run's selector, field `ws`), then the others in text order. A run's ready streams
    /// are these, at its priority; the scripts that queue its tasks take them in this order and
    /// name a task's stream by its index here ([`Dag::selector_index`]). One item for a DAG
    /// without step-level selectors.
    #[must_use]
    pub fn selectors(&self) -> Vec<String> {
        let own = self.worker_selector.canonical();
        let others: std::collections::BTreeSet<String> = self
            .steps
            .iter()
            .chain(self.handlers.iter().map(|(_, step)| step))
            .filter_map(|step| step.worker_selector.as_ref())
            .map(crate::labels::Labels::canonical)
            .filter(|s| *s != own)
            .collect();
        std::iter::once(own).chain(others).collect()
    }

    /// The index in [`Dag::selectors`] of the selector of `step` ([`Dag::selector_of`]): 0 for
    /// the DAG's own.
    #[must_use]
    pub fn selector_index(&self, step: &str) -> usize {
        let of = self.selector_of(step);
        self.selectors().iter().position(|s| *s == of).unwrap_or(0)
    }

    /// True when some step or handler has its own `workerSelector`.
    #[must_use]
    pub fn has_step_selectors(&self) -> bool {
        self.steps
            .iter()
            .chain(self.handlers.iter().map(|(_, step)| step))
            .any(|step| step.worker_selector.is_some())
    }

    /// For each step (by index), the indices of the steps it depends on.
    ///
    /// Runs in O(steps + edges). Names that match no step (only possible in a hand-built
    /// `Dag`; [`Dag::parse`] refuses them) are skipped.
    #[must_use]
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        graph::dependencies(&self.steps)
    }

    /// For each step (by index), the indices of the steps that depend on it.
    ///
    /// Runs in O(steps + edges); each list is in ascending step order.
    #[must_use]
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        graph::dependents(&self.steps)
    }

    /// Bind caller-given params (name -> value) onto the declared ones.
    ///
    /// Keys of `given` are declared param names or 1-based positions (`"1"`, `"2"`, …; a
    /// position may address a named param too), as Dagu callers override params by name
    /// (`NAME=value`) or by position. The result has one [`BoundParam`] per declared param in
    /// declared order, holding the given value or else the default. Values are opaque strings.
    ///
    /// # Errors
    /// A key that is neither a declared name nor a valid position (field `params.KEY`, listing
    /// the declared params), or a param given twice (by name and by its position).
    pub fn bind_params(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<Vec<BoundParam>, DagErrors> {
        params::bind(&self.params, given)
    }
}
