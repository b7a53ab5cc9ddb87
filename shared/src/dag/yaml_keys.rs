//! The keys dagrid knows, per level (top level, step, a step's `retryPolicy`, `handlerOn`,
//! a precondition, `continueOn`, `defaults`, the map form of `output`), and how each map's
//! keys are classified: supported, Dagu-but-unsupported (an error with the one message of
//! [`not_supported_yet`]), informational (warning) or unknown (error). docs/dag-format.md
//! ("Every Dagu key") has a row for every key listed here; a unit test checks it.
//!
//! Each key is a group of spellings: Dagu v1 `camelCase`, v2 `snake_case` and old aliases. Two
//! spellings of one group in the same map are an error.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use super::names::suggest;
use super::report::{child, Report};
use super::value::{describe_key, key_text};

/// A supported top-level key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TopKey {
    Name,
    Description,
    Type,
    Params,
    Env,
    Steps,
    Priority,
    Queue,
    MaxActiveRuns,
    MaxActiveSteps,
    Dedup,
    Schedule,
    Timezone,
    CatchupWindow,
    OverlapPolicy,
    TimeoutSec,
    MaxCleanUpTimeSec,
    HandlerOn,
    Preconditions,
    Dotenv,
    WorkingDir,
    Shell,
    RetryPolicy,
    DelaySec,
    SkipIfSuccessful,
    RestartWaitSec,
    Defaults,
    MaxOutputSize,
    WorkerSelector,
}

/// A supported step key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKey {
    Name,
    Id,
    Description,
    Command,
    Script,
    Shell,
    Dir,
    Env,
    Depends,
    Output,
    RetryPolicy,
    TimeoutSec,
    SignalOnStop,
    Preconditions,
    ContinueOn,
    RepeatPolicy,
    WorkerSelector,
    Call,
    Params,
    Parallel,
}

/// A key of a step's `retryPolicy` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryKey {
    Limit,
    IntervalSec,
    Backoff,
    MaxIntervalSec,
    ExitCode,
}

/// A key of a step's `repeatPolicy` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepeatKey {
    Repeat,
    Condition,
    Expected,
    ExitCode,
    IntervalSec,
    Limit,
    Backoff,
    MaxIntervalSec,
}

/// A key of the `handlerOn` map: `cancel` (v1) and `abort` (v2) are one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandlerKey {
    Success,
    Failure,
    Abort,
    Exit,
}

/// A key of one entry of `preconditions` (Dagu's condition map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConditionKey {
    Condition,
    Expected,
    Negate,
}

/// A key of a step's `continueOn` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContinueKey {
    Failure,
    Skipped,
    ExitCode,
    Output,
    MarkSuccess,
}

/// The spellings of one key.
type Spellings = &'static [&'static str];

/// The keys of one level.
pub(super) struct KeyTable<K: 'static> {
    supported: &'static [(K, Spellings)],
    unsupported: &'static [Spellings],
    informational: &'static [Spellings],
}

/// Supported top-level keys.
const TOP_LEVEL_KEYS: &[(TopKey, Spellings)] = &[
    (TopKey::Name, &["name"]),
    (TopKey::Description, &["description"]),
    (TopKey::Type, &["type"]),
    (TopKey::Params, &["params"]),
    (TopKey::Env, &["env"]),
    (TopKey::Steps, &["steps"]),
    (TopKey::Priority, &["priority"]),
    (TopKey::Queue, &["queue"]),
    (TopKey::MaxActiveRuns, &["maxActiveRuns", "max_active_runs"]),
    (
        TopKey::MaxActiveSteps,
        &["maxActiveSteps", "max_active_steps"],
    ),
    (TopKey::Dedup, &["dedup"]),
    (TopKey::Schedule, &["schedule"]),
    (TopKey::Timezone, &["timezone"]),
    (TopKey::CatchupWindow, &["catchupWindow", "catchup_window"]),
    (TopKey::OverlapPolicy, &["overlapPolicy", "overlap_policy"]),
    (TopKey::TimeoutSec, &["timeoutSec", "timeout_sec"]),
    (
        TopKey::MaxCleanUpTimeSec,
        &["maxCleanUpTimeSec", "max_clean_up_time_sec"],
    ),
    (TopKey::HandlerOn, &["handlerOn", "handler_on"]),
    (TopKey::Preconditions, &["preconditions", "precondition"]),
    (TopKey::Dotenv, &["dotenv"]),
    (TopKey::WorkingDir, &["workingDir", "working_dir"]),
    (TopKey::Shell, &["shell"]),
    (TopKey::RetryPolicy, &["retryPolicy", "retry_policy"]),
    (TopKey::DelaySec, &["delaySec", "delay_sec"]),
    (
        TopKey::SkipIfSuccessful,
        &["skipIfSuccessful", "skip_if_successful"],
    ),
    (
        TopKey::RestartWaitSec,
        &["restartWaitSec", "restart_wait_sec"],
    ),
    (TopKey::Defaults, &["defaults"]),
    (TopKey::MaxOutputSize, &["maxOutputSize", "max_output_size"]),
    (
        TopKey::WorkerSelector,
        &["workerSelector", "worker_selector"],
    ),
];

/// Top-level Dagu keys with run-time semantics dagrid does not implement yet: an error, since
/// ignoring them would run the DAG differently from Dagu. Remove an entry when it lands.
const UNSUPPORTED_TOP_LEVEL_KEYS: &[Spellings] = &[
    &["signalOnStop", "signal_on_stop"],
    &["smtp"],
    &["mailOn", "mail_on"],
    &["errorMail", "error_mail"],
    &["infoMail", "info_mail"],
    &["waitMail", "wait_mail"],
    &["container"],
    &["registryAuths", "registry_auths"],
    &["ssh"],
    &["s3"],
    &["llm"],
    &["redis"],
    &["kubernetes"],
    &["harness"],
    &["harnesses"],
    &["secrets"],
    &["step_types"],
    &["artifacts"],
    &["artifactDir"],
    &["enableArtifact"],
    &["webhook"],
    &["functions"],
];

/// Top-level Dagu keys that only inform Dagu's UI or storage: accepted with a warning.
const INFORMATIONAL_TOP_LEVEL_KEYS: &[Spellings] = &[
    &["tags", "labels"],
    &["group"],
    &["histRetentionDays", "hist_retention_days"],
    &["logDir", "log_dir"],
    &["logOutput", "log_output"],
    &["otel"],
    &["runConfig", "run_config"],
    &["histRetentionRuns", "hist_retention_runs"],
];

/// Supported step keys.
const STEP_KEYS: &[(StepKey, Spellings)] = &[
    (StepKey::Name, &["name"]),
    (StepKey::Id, &["id"]),
    (StepKey::Description, &["description"]),
    (StepKey::Command, &["command"]),
    (StepKey::Script, &["script"]),
    (StepKey::Shell, &["shell"]),
    (StepKey::Dir, &["dir", "workingDir", "working_dir"]),
    (StepKey::Env, &["env"]),
    (StepKey::Depends, &["depends"]),
    (StepKey::Output, &["output"]),
    (StepKey::RetryPolicy, &["retryPolicy", "retry_policy"]),
    (StepKey::TimeoutSec, &["timeoutSec", "timeout_sec"]),
    (StepKey::SignalOnStop, &["signalOnStop", "signal_on_stop"]),
    (StepKey::Preconditions, &["preconditions", "precondition"]),
    (StepKey::ContinueOn, &["continueOn", "continue_on"]),
    (StepKey::RepeatPolicy, &["repeatPolicy", "repeat_policy"]),
    (
        StepKey::WorkerSelector,
        &["workerSelector", "worker_selector"],
    ),
    // Dagu v1's `run` is v2's `call`: one key, so both in one step is an error.
    (StepKey::Call, &["call", "run"]),
    (StepKey::Params, &["params"]),
    (StepKey::Parallel, &["parallel"]),
];

/// Step-level Dagu keys with run-time semantics dagrid does not implement yet: an error.
/// Remove an entry when it lands.
const UNSUPPORTED_STEP_KEYS: &[Spellings] = &[
    &["mailOnError", "mail_on_error"],
    &["executor"],
    &["type"],
    &["with", "config"],
    &["exec"],
    &["stdout"],
    &["stderr"],
    &["shellPackages", "shell_packages"],
    &["container"],
    &["approval"],
    &["llm"],
    &["messages"],
    &["agent"],
    &["value"],
    &["routes"],
    &["tools"],
];

/// Step-level Dagu keys that only inform Dagu's UI or storage: accepted with a warning.
const INFORMATIONAL_STEP_KEYS: &[Spellings] = &[&["logOutput", "log_output"]];

/// The keys of a step's `retryPolicy` map (all supported).
const RETRY_POLICY_KEYS: &[(RetryKey, Spellings)] = &[
    (RetryKey::Limit, &["limit"]),
    (RetryKey::IntervalSec, &["intervalSec", "interval_sec"]),
    (RetryKey::Backoff, &["backoff"]),
    (
        RetryKey::MaxIntervalSec,
        &["maxIntervalSec", "max_interval_sec"],
    ),
    (RetryKey::ExitCode, &["exitCode", "exit_code"]),
];

/// The keys of the DAG-level `retryPolicy` map (Dagu's `dagRetryPolicy`: no `exitCode`).
const DAG_RETRY_POLICY_KEYS: &[(RetryKey, Spellings)] = &[
    (RetryKey::Limit, &["limit"]),
    (RetryKey::IntervalSec, &["intervalSec", "interval_sec"]),
    (RetryKey::Backoff, &["backoff"]),
    (
        RetryKey::MaxIntervalSec,
        &["maxIntervalSec", "max_interval_sec"],
    ),
];

/// The keys of a step's `repeatPolicy` map (all supported).
const REPEAT_POLICY_KEYS: &[(RepeatKey, Spellings)] = &[
    (RepeatKey::Repeat, &["repeat"]),
    (RepeatKey::Condition, &["condition"]),
    (RepeatKey::Expected, &["expected"]),
    (RepeatKey::ExitCode, &["exitCode", "exit_code"]),
    (RepeatKey::IntervalSec, &["intervalSec", "interval_sec"]),
    (RepeatKey::Limit, &["limit"]),
    (RepeatKey::Backoff, &["backoff"]),
    (
        RepeatKey::MaxIntervalSec,
        &["maxIntervalSec", "max_interval_sec"],
    ),
];

/// The key table of the DAG-level `retryPolicy` map.
pub(super) const DAG_RETRY_POLICY: KeyTable<RetryKey> = KeyTable {
    supported: DAG_RETRY_POLICY_KEYS,
    unsupported: &[],
    informational: &[],
};

/// The key table of a step's `repeatPolicy` map.
pub(super) const REPEAT_POLICY: KeyTable<RepeatKey> = KeyTable {
    supported: REPEAT_POLICY_KEYS,
    unsupported: &[],
    informational: &[],
};

/// The keys of the `handlerOn` map.
const HANDLER_ON_KEYS: &[(HandlerKey, Spellings)] = &[
    (HandlerKey::Success, &["success"]),
    (HandlerKey::Failure, &["failure"]),
    (HandlerKey::Abort, &["cancel", "abort"]),
    (HandlerKey::Exit, &["exit"]),
];

/// `handlerOn` keys of later Dagu versions that dagrid does not run yet: an error.
const UNSUPPORTED_HANDLER_ON_KEYS: &[Spellings] = &[&["init"], &["wait"]];

/// The key table of the `handlerOn` map.
pub(super) const HANDLER_ON: KeyTable<HandlerKey> = KeyTable {
    supported: HANDLER_ON_KEYS,
    unsupported: UNSUPPORTED_HANDLER_ON_KEYS,
    informational: &[],
};

/// The keys of one `preconditions` entry (all supported).
const CONDITION_KEYS: &[(ConditionKey, Spellings)] = &[
    // `command`: Dagu's deprecated alias (`builder.go` `parsePrecondition`).
    (ConditionKey::Condition, &["condition", "command"]),
    (ConditionKey::Expected, &["expected"]),
    (ConditionKey::Negate, &["negate"]),
];

/// The keys of a step's `continueOn` map (all supported).
const CONTINUE_ON_KEYS: &[(ContinueKey, Spellings)] = &[
    (ContinueKey::Failure, &["failure", "failed"]),
    (ContinueKey::Skipped, &["skipped"]),
    (ContinueKey::ExitCode, &["exitCode", "exit_code"]),
    (ContinueKey::Output, &["output"]),
    (ContinueKey::MarkSuccess, &["markSuccess", "mark_success"]),
];

/// The key table of one `preconditions` entry.
pub(super) const CONDITION: KeyTable<ConditionKey> = KeyTable {
    supported: CONDITION_KEYS,
    unsupported: &[],
    informational: &[],
};

/// The key table of a step's `continueOn` map.
pub(super) const CONTINUE_ON: KeyTable<ContinueKey> = KeyTable {
    supported: CONTINUE_ON_KEYS,
    unsupported: &[],
    informational: &[],
};

/// The top-level key table.
pub(super) const TOP_LEVEL: KeyTable<TopKey> = KeyTable {
    supported: TOP_LEVEL_KEYS,
    unsupported: UNSUPPORTED_TOP_LEVEL_KEYS,
    informational: INFORMATIONAL_TOP_LEVEL_KEYS,
};

/// The step key table.
pub(super) const STEP: KeyTable<StepKey> = KeyTable {
    supported: STEP_KEYS,
    unsupported: UNSUPPORTED_STEP_KEYS,
    informational: INFORMATIONAL_STEP_KEYS,
};

/// The key table of a step's `retryPolicy` map.
pub(super) const RETRY_POLICY: KeyTable<RetryKey> = KeyTable {
    supported: RETRY_POLICY_KEYS,
    unsupported: &[],
    informational: &[],
};

/// A key of the DAG-level `defaults` map (Dagu `defaults.go`): step values every step (and
/// handler) takes unless it sets the key itself; `env` and `preconditions` are added before
/// the step's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefaultsKey {
    ContinueOn,
    RetryPolicy,
    RepeatPolicy,
    TimeoutSec,
    MailOnError,
    SignalOnStop,
    Env,
    Preconditions,
    Agent,
}

/// The keys of `defaults`, spelled as the step keys they set (so a step's own key, in either
/// spelling, is found by the step table). A default whose step key dagrid does not run yet
/// is refused at `defaults.<key>` by the pre-pass, not here.
const DEFAULTS_KEYS: &[(DefaultsKey, Spellings)] = &[
    (DefaultsKey::ContinueOn, &["continueOn", "continue_on"]),
    (DefaultsKey::RetryPolicy, &["retryPolicy", "retry_policy"]),
    (
        DefaultsKey::RepeatPolicy,
        &["repeatPolicy", "repeat_policy"],
    ),
    (DefaultsKey::TimeoutSec, &["timeoutSec", "timeout_sec"]),
    (DefaultsKey::MailOnError, &["mailOnError", "mail_on_error"]),
    (
        DefaultsKey::SignalOnStop,
        &["signalOnStop", "signal_on_stop"],
    ),
    (DefaultsKey::Env, &["env"]),
    (
        DefaultsKey::Preconditions,
        &["preconditions", "precondition"],
    ),
    (DefaultsKey::Agent, &["agent"]),
];

/// The key table of the DAG-level `defaults` map.
pub(super) const DEFAULTS: KeyTable<DefaultsKey> = KeyTable {
    supported: DEFAULTS_KEYS,
    unsupported: &[],
    informational: &[],
};

/// A key of a step's `output` map in the form of Dagu 2.0 to 2.6.1 (`{name, key, omit,
/// schema}`); Dagu 2.6.2 replaced it by structured outputs, which dagrid refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutputKey {
    Name,
    Key,
    Omit,
}

/// The keys of the object form of `output`.
const OUTPUT_KEYS: &[(OutputKey, Spellings)] = &[
    (OutputKey::Name, &["name"]),
    (OutputKey::Key, &["key"]),
    (OutputKey::Omit, &["omit"]),
];

/// The key table of the object form of `output`: `schema` (validate the captured value
/// against a JSON schema, failing the step) is not run yet.
pub(super) const OUTPUT: KeyTable<OutputKey> = KeyTable {
    supported: OUTPUT_KEYS,
    unsupported: &[&["schema"]],
    informational: &[],
};

/// The one message for a Dagu key or form dagrid does not run yet (issue 15: every such key
/// gets it, never an "unknown key"): `a Dagu key that dagrid does not support yet: <key>
/// (<what to do>)`.
pub(super) fn not_supported_yet(key: &str, what_to_do: &str) -> String {
    format!("a Dagu key that dagrid does not support yet: {key} ({what_to_do})")
}

/// [`not_supported_yet`] for an unsupported key of any level, with the advice for that key.
pub(super) fn unsupported_key(spelling: &str) -> String {
    not_supported_yet(spelling, advice(spelling))
}

/// What to do instead of an unsupported key, by its spelling (either key style).
fn advice(spelling: &str) -> &'static str {
    let key: String = spelling
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match key.as_str() {
        "container" | "registryauths" | "kubernetes" | "ssh" | "s3" | "redis" | "llm"
        | "harness" | "harnesses" | "executor" | "with" | "config" | "messages" | "agent"
        | "tools" | "approval" | "value" | "routes" | "steptypes" | "schema" | "type" => {
            "dagrid runs shell steps only; call the tool from a command or script, or remove it"
        }
        "functions" => {
            "dagrid does not run Dagu functions; make the function a DAG of its own and run it \
             from a step with call:, or inline its steps"
        }
        "smtp" | "mailon" | "errormail" | "infomail" | "waitmail" | "mailonerror" => {
            "dagrid sends no mail; send it from a handler_on step, or remove it"
        }
        "secrets" => "pass the values through env or params, or remove it",
        "webhook" => "start runs through dagrid's API instead, and remove it",
        "artifacts" | "artifactdir" | "enableartifact" => {
            "dagrid keeps no artifact directory; write files to a directory of your own and \
             remove it"
        }
        "stdout" | "stderr" => "redirect in the command instead (> FILE), and remove it",
        "shellpackages" => "install the packages on the workers and remove it",
        "exec" => "write the program and its arguments in command instead",
        "init" | "wait" => "run the work as a step, and remove the handler",
        _ => "remove it, or run this DAG on Dagu",
    }
}

/// A supported key found in a map, with its value and field path.
pub(super) struct Entry<'a, K> {
    pub(super) key: K,
    pub(super) field: String,
    pub(super) value: &'a Value,
}

/// Which group a spelling belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Supported(usize),
    Unsupported(usize),
    Informational(usize),
}

impl<K: Copy> KeyTable<K> {
    fn group_of(&self, spelling: &str) -> Option<Group> {
        let supported = self.supported.iter().map(|(_, group)| *group);
        if let Some(index) = position_in(supported, spelling) {
            return Some(Group::Supported(index));
        }
        if let Some(index) = position_in(self.unsupported.iter().copied(), spelling) {
            return Some(Group::Unsupported(index));
        }
        position_in(self.informational.iter().copied(), spelling).map(Group::Informational)
    }

    fn all_spellings(&self) -> impl Iterator<Item = &'static str> + '_ {
        let supported = self.supported.iter().flat_map(|(_, group)| group.iter());
        let unsupported = self.unsupported.iter().flat_map(|group| group.iter());
        let informational = self.informational.iter().flat_map(|group| group.iter());
        supported.chain(unsupported).chain(informational).copied()
    }

    /// Whether `spelling` is a Dagu key of this level that dagrid refuses.
    pub(super) fn is_unsupported(&self, spelling: &str) -> bool {
        matches!(self.group_of(spelling), Some(Group::Unsupported(_)))
    }

    /// The spellings of the supported key `key`, for finding it in a raw map.
    pub(super) fn spellings_of(&self, key: K) -> Spellings
    where
        K: PartialEq,
    {
        let group = self.supported.iter().find(|(k, _)| *k == key);
        group.map_or(&[], |(_, spellings)| spellings)
    }

    /// Every spelling of this level: supported, unsupported and informational.
    #[cfg(test)]
    pub(super) fn every_spelling(&self) -> Vec<&'static str> {
        self.all_spellings().collect()
    }

    fn supported_spellings(&self) -> Vec<&'static str> {
        let groups = self.supported.iter().flat_map(|(_, group)| group.iter());
        groups.copied().collect()
    }

    /// Classify every key of `map` (the map at field path `path`), reporting unsupported,
    /// unknown, non-string and doubly spelled keys and warning about informational ones.
    /// Returns the supported entries in file order.
    pub(super) fn entries<'a>(
        &self,
        map: &'a Mapping,
        path: &str,
        report: &mut Report,
    ) -> Vec<Entry<'a, K>> {
        let mut seen: HashMap<Group, &str> = HashMap::new();
        let mut entries = Vec::new();
        for (key, value) in map {
            let Some(spelling) = key_text(key) else {
                let found = describe_key(key);
                report.error(path, format!("keys must be strings, found {found}"));
                continue;
            };
            let field = child(path, spelling);
            let Some(group) = self.group_of(spelling) else {
                self.report_unknown(spelling, &field, report);
                continue;
            };
            if let Some(first) = seen.insert(group, spelling) {
                report.error(
                    &field,
                    format!(
                        "\"{first}\" and \"{spelling}\" are two spellings of the same key; keep one"
                    ),
                );
                continue;
            }
            match group {
                Group::Supported(index) => entries.push(Entry {
                    key: self.supported[index].0,
                    field,
                    value,
                }),
                Group::Unsupported(_) => report.error(field, unsupported_key(spelling)),
                Group::Informational(_) => {
                    report.warn(format!("{field}: ignored by dagrid (informational)"));
                }
            }
        }
        entries
    }

    fn report_unknown(&self, spelling: &str, field: &str, report: &mut Report) {
        if !report.has_room() {
            report.error(field, "unknown key");
            return;
        }
        let message = match suggest(spelling, self.all_spellings()) {
            Some(near) => format!("unknown key \"{spelling}\"; did you mean \"{near}\"?"),
            None => format!(
                "unknown key \"{spelling}\"; valid keys here: {}",
                self.supported_spellings().join(", ")
            ),
        };
        report.error(field, message);
    }
}

/// The index of the group holding `spelling`.
fn position_in(groups: impl Iterator<Item = Spellings>, spelling: &str) -> Option<usize> {
    let mut groups = groups;
    groups.position(|group| group.contains(&spelling))
}
