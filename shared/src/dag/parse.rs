//! The top level of a DAG file: YAML loading, top-level keys, and assembling the [`Dag`].

use serde_yaml::Value;

use super::conditions;
use super::env::{self, parse_env};
use super::graph::resolve;
use super::guard;
use super::handlers::{check_names, parse_handlers, HandlersDraft};
use super::keys::{TopKey, TOP_LEVEL};
use super::names::dag_name_problem;
use super::params::parse_params;
use super::queueing;
use super::reliability;
use super::report::{item, Report};
use super::step::{parse_step, StepDraft};
use super::value::{kind, string, type_error};
use super::{
    Condition, Dag, DagError, DagErrors, DagKind, EnvVar, OverlapPolicy, ParamDef, MAX_STEPS,
};
use crate::model::{DedupPolicy, Priority};

use super::NAME_RULE as DAG_NAME_RULE;

/// What `name:` held.
#[derive(Default)]
enum NameKey {
    /// No `name:` key (or null): the caller's default applies.
    #[default]
    Absent,
    /// A valid name.
    Valid(String),
    /// An invalid name, already reported.
    Invalid,
}

/// What the top level declared, before the steps are resolved.
#[derive(Default)]
struct TopDraft {
    name: NameKey,
    description: Option<String>,
    kind: Option<DagKind>,
    params: Vec<ParamDef>,
    env: Vec<EnvVar>,
    /// `None` when there is no `steps:` key.
    steps: Option<Vec<StepDraft>>,
    priority: Option<Priority>,
    queue: Option<String>,
    max_active_runs: Option<u32>,
    max_active_steps: Option<u32>,
    dedup: Option<DedupPolicy>,
    schedule: Vec<String>,
    timezone: Option<String>,
    catchup_window_ms: Option<u64>,
    overlap: Option<OverlapPolicy>,
    timeout_ms: Option<u64>,
    max_cleanup_ms: Option<u64>,
    handlers: HandlersDraft,
    preconditions: Vec<Condition>,
    dotenv: Vec<String>,
    working_dir: Option<String>,
}

/// Parse and validate `yaml`; see [`Dag::parse`].
pub(super) fn parse_dag(yaml: &str, default_name: &str) -> Result<Dag, DagErrors> {
    let root = load(yaml)?;
    let mut report = Report::default();
    guard::check_nul(&root, "", &mut report);
    let Value::Mapping(map) = &root else {
        let found = kind(&root);
        let message = format!(
            "the top level must be a map of DAG keys (steps:, name:, params:, …), found {found}"
        );
        return Err(DagError::new("", message).into());
    };
    let mut top = TopDraft::default();
    for entry in TOP_LEVEL.entries(map, "", &mut report) {
        read_key(entry.key, &entry.field, entry.value, &mut top, &mut report);
    }
    let name = dag_name(top.name, default_name, &mut report);
    let kind = top.kind.unwrap_or(DagKind::Graph);
    let drafts = top.steps.unwrap_or_else(|| {
        report.error("steps", no_steps_message());
        Vec::new()
    });
    let steps = resolve(drafts, kind, &mut report);
    check_names(&top.handlers, &steps, &mut report);
    queueing::check_schedules(
        "schedule",
        &top.schedule,
        top.timezone.as_deref(),
        &mut report,
    );
    if !top.schedule.is_empty() {
        super::params::warn_unschedulable(&top.params, &mut report);
    }
    let warnings = report.finish()?;
    Ok(Dag {
        name,
        description: top.description,
        kind,
        params: top.params,
        env: top.env,
        steps,
        warnings,
        priority: top.priority,
        queue: top.queue,
        max_active_runs: top.max_active_runs,
        max_active_steps: top.max_active_steps,
        dedup: top.dedup,
        schedule: top.schedule,
        timezone: top.timezone,
        catchup_window_ms: top.catchup_window_ms,
        overlap: top.overlap.unwrap_or_default(),
        timeout_ms: top.timeout_ms,
        max_cleanup_ms: top.max_cleanup_ms,
        handlers: top.handlers.handlers,
        preconditions: top.preconditions,
        dotenv: top.dotenv,
        working_dir: top.working_dir,
    })
}

/// The YAML document as a value, with `<<` merge keys applied.
fn load(yaml: &str) -> Result<Value, DagErrors> {
    guard::check_source(yaml)?;
    let mut root: Value = serde_yaml::from_str(yaml)
        .map_err(|err| DagError::new("", format!("invalid YAML: {err}")))?;
    root.apply_merge()
        .map_err(|err| DagError::new("", format!("invalid YAML merge key (<<): {err}")))?;
    Ok(root)
}

fn read_key(key: TopKey, field: &str, value: &Value, top: &mut TopDraft, report: &mut Report) {
    match key {
        TopKey::Name => top.name = read_name(field, value, report),
        TopKey::Description => top.description = string(report, field, "a string", value),
        TopKey::Type => top.kind = read_kind(field, value, report),
        TopKey::Params => {
            top.params = parse_params(value, report);
            check_defaults(&top.params, report);
        }
        TopKey::Env => top.env = parse_env(value, field, report),
        TopKey::Steps => top.steps = Some(read_steps(field, value, report)),
        TopKey::Priority => top.priority = queueing::priority(field, value, report),
        TopKey::Queue => top.queue = queueing::queue(field, value, report),
        TopKey::MaxActiveRuns => top.max_active_runs = queueing::limit(field, value, report),
        TopKey::MaxActiveSteps => top.max_active_steps = queueing::limit(field, value, report),
        TopKey::Dedup => top.dedup = queueing::dedup(field, value, report),
        TopKey::Schedule => top.schedule = queueing::schedule(field, value, report),
        TopKey::Timezone => top.timezone = queueing::timezone(field, value, report),
        TopKey::CatchupWindow => {
            top.catchup_window_ms = queueing::catchup_window(field, value, report)
        }
        TopKey::OverlapPolicy => top.overlap = queueing::overlap(field, value, report),
        TopKey::TimeoutSec => top.timeout_ms = reliability::timeout(field, value, report),
        TopKey::MaxCleanUpTimeSec => {
            top.max_cleanup_ms = reliability::cleanup(field, value, report);
        }
        TopKey::HandlerOn => top.handlers = parse_handlers(field, value, report),
        TopKey::Preconditions => {
            top.preconditions = conditions::preconditions(field, value, report);
        }
        TopKey::Dotenv => top.dotenv = env::dotenv(field, value, report),
        TopKey::WorkingDir => top.working_dir = env::working_dir(field, value, report),
    }
}

/// Every default must be a value a run could be given (see [`guard::param_value_problem`]).
fn check_defaults(params: &[ParamDef], report: &mut Report) {
    for (i, p) in params.iter().enumerate() {
        if let Some(problem) = guard::param_value_problem(&p.default) {
            let field = match &p.name {
                Some(name) => super::report::child("params", name),
                None => item("params", i),
            };
            report.error(field, format!("the default {problem}"));
        }
    }
    if let Some(problem) = guard::params_total_problem(params.iter().map(|p| p.default.as_str())) {
        report.error("params", problem);
    }
}

fn read_name(field: &str, value: &Value, report: &mut Report) -> NameKey {
    if value.is_null() {
        return NameKey::Absent;
    }
    let Some(name) = string(report, field, "a DAG name string", value) else {
        return NameKey::Invalid;
    };
    if let Some(problem) = dag_name_problem(&name) {
        let message = format!("\"{name}\" is not a valid DAG name: it {problem}; {DAG_NAME_RULE}");
        report.error(field, message);
        return NameKey::Invalid;
    }
    NameKey::Valid(name)
}

/// The DAG's name: `name:` if given, else the caller's default (the file stem).
fn dag_name(declared: NameKey, default_name: &str, report: &mut Report) -> String {
    match declared {
        NameKey::Valid(name) => name,
        NameKey::Invalid => String::new(),
        NameKey::Absent if default_name.is_empty() => {
            report.error(
                "name",
                "the DAG has no name; add `name: <name>` to the file (through the API you may \
                 pass ?name=<name> instead)",
            );
            String::new()
        }
        NameKey::Absent => {
            if let Some(problem) = dag_name_problem(default_name) {
                report.error(
                    "name",
                    format!(
                        "the file has no name: and its file name \"{default_name}\" cannot name \
                         the DAG (it {problem}); add name: or rename the file ({DAG_NAME_RULE})"
                    ),
                );
            }
            default_name.to_owned()
        }
    }
}

fn read_kind(field: &str, value: &Value, report: &mut Report) -> Option<DagKind> {
    match string(report, field, "graph or chain", value)?.as_str() {
        "graph" => Some(DagKind::Graph),
        "chain" => Some(DagKind::Chain),
        other => {
            report.error(
                field,
                format!(
                    "\"{other}\" is not a DAG type dagrid runs; use graph (order from depends) \
                     or chain (each step after the previous one)"
                ),
            );
            None
        }
    }
}

fn no_steps_message() -> &'static str {
    "the DAG has no steps; add a steps: list with at least one step (- name: … command: …)"
}

fn read_steps(field: &str, value: &Value, report: &mut Report) -> Vec<StepDraft> {
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => {
            report.error(field, no_steps_message());
            return Vec::new();
        }
        Value::Mapping(_) => {
            report.error(
                field,
                "expected a list of steps, found a map; write each step as a list item \
                 (- name: NAME)",
            );
            return Vec::new();
        }
        other => {
            type_error(report, field, "a list of steps", other);
            return Vec::new();
        }
    };
    if items.is_empty() {
        report.error(field, no_steps_message());
    } else if items.len() > MAX_STEPS {
        let count = items.len();
        report.error(
            field,
            format!(
                "the DAG has {count} steps; dagrid accepts at most {MAX_STEPS}, split it into \
                 smaller DAGs"
            ),
        );
        return Vec::new();
    }
    let drafts = items.iter().enumerate();
    drafts
        .map(|(index, step)| parse_step(step, &item(field, index), report))
        .collect()
}
