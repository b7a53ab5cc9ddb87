//! The top level of a DAG file: YAML loading, top-level keys, and assembling the [`Dag`].

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::conditions;
use super::defaults;
use super::env::{self, parse_env};
use super::graph::resolve;
use super::guard;
use super::handlers::{check_names, parse_handlers, HandlersDraft};
use super::names::dag_name_problem;
use super::params::parse_params;
use super::queueing;
use super::reliability;
use super::report::{child, item, Report};
use super::runpol;
use super::step::{parse_step, read_shell, StepDraft};
use super::value::{describe_key, key_text, kind, string, type_error};
use super::yaml_keys::{TopKey, TOP_LEVEL};
use super::{
    Condition, Dag, DagError, DagErrors, DagKind, EnvVar, OverlapPolicy, ParamDef, RunPolicy,
    MAX_DOCUMENTS, MAX_ERRORS, MAX_STEPS,
};
use super::{DedupPolicy, Priority};

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

/// The steps as written, in run-state order (file order; by name for the map form).
#[derive(Default)]
pub(super) struct StepsDraft {
    pub(super) drafts: Vec<StepDraft>,
    /// Written as a map keyed by name: no file order, so a chain adds no edges (as in Dagu).
    pub(super) keyed: bool,
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
    steps: Option<StepsDraft>,
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
    /// DAG-level `shell`, given to every step and handler without a `shell` of its own.
    shell: Option<String>,
    run_policy: RunPolicy,
    max_output_size: Option<u64>,
    worker_selector: crate::labels::Labels,
}

/// Parse and validate `yaml`; see [`Dag::parse`]. The first document is the DAG; each later
/// one a local DAG (Dagu's multi-document files, `loadDAGsFromData`): parsed on its own (no
/// inheritance from the first, as in Dagu without a base config), it must have `name:`, and
/// is named `<DAG>.<its name>`. Calls to a local's name, from any document, resolve to that
/// name (a local wins over a registered DAG of the same name, as in Dagu).
pub(super) fn parse_dag(yaml: &str, default_name: &str) -> Result<Dag, DagErrors> {
    let mut documents = load(yaml)?.into_iter();
    let root = documents.next().unwrap_or(Value::Null);
    let main = parse_document(root, default_name);
    let mut errors = Vec::new();
    let mut locals = Vec::new();
    let mut short_names: Vec<String> = Vec::new();
    for (index, document) in documents.enumerate() {
        let at = format!("documents[{}]", index + 1);
        let local_name = document.get("name").and_then(Value::as_str).map(str::trim);
        let Some(local_name) = local_name.filter(|n| !n.is_empty()).map(str::to_owned) else {
            errors.push(DagError::new(
                child(&at, "name"),
                "a local DAG (a YAML document after the first ---) needs name:, the name steps \
                 call it by (call: <name>); add name: to this document",
            ));
            continue;
        };
        match parse_document(document, "") {
            Ok(mut local) => {
                local.warnings = (local.warnings.into_iter())
                    .map(|w| format!("{at}: {w}"))
                    .collect();
                if short_names.contains(&local_name) {
                    errors.push(DagError::new(
                        child(&at, "name"),
                        format!(
                            "a local DAG named \"{local_name}\" is already defined in this file; \
                             give each document a name of its own"
                        ),
                    ));
                }
                short_names.push(local_name);
                locals.push(local);
            }
            Err(DagErrors(found)) => errors.extend(found.into_iter().map(|e| DagError {
                field: if e.field.is_empty() {
                    at.clone()
                } else {
                    child(&at, &e.field)
                },
                message: e.message,
            })),
        }
    }
    let mut main = match main {
        Ok(main) if errors.is_empty() => main,
        Ok(_) => return Err(capped(errors)),
        Err(DagErrors(mut found)) => {
            found.extend(errors);
            return Err(capped(found));
        }
    };
    for (index, (local, short)) in locals.iter_mut().zip(&short_names).enumerate() {
        let at = format!("documents[{}]", index + 1);
        let full = format!("{}.{short}", main.name);
        if *short == main.name {
            errors.push(DagError::new(
                child(&at, "name"),
                format!(
                    "\"{short}\" is also the name of the file's DAG (the first document); give \
                     the local DAG a name of its own"
                ),
            ));
        } else if let Some(problem) = dag_name_problem(&full) {
            errors.push(DagError::new(
                child(&at, "name"),
                format!(
                    "the local DAG is registered as \"{full}\" (<DAG>.<local name>), which is \
                     not a valid DAG name: it {problem}; shorten this name: or the first \
                     document's ({DAG_NAME_RULE})"
                ),
            ));
        }
        local.name = full;
    }
    if !errors.is_empty() {
        return Err(capped(errors));
    }
    let main_name = main.name.clone();
    let resolve_local = |dag: &mut Dag| {
        for step in dag.steps.iter_mut().chain(handler_steps(&mut dag.handlers)) {
            if let Some(call) = step.call.as_mut() {
                if short_names.contains(&call.dag) {
                    call.dag = format!("{main_name}.{}", call.dag);
                }
            }
        }
    };
    for local in &mut locals {
        resolve_local(local);
    }
    resolve_local(&mut main);
    main.locals = locals;
    Ok(main)
}

/// The problems of all documents, at most [`MAX_ERRORS`] of them (each document's own are
/// capped by its report), then one line saying how many more.
fn capped(mut errors: Vec<DagError>) -> DagErrors {
    // One document's report already ends with its own "… more" line.
    if errors.len() > MAX_ERRORS + 1 {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(DagError::new(
            "",
            format!(
                "… and at least {more} more problems not listed; fix the ones above and parse \
                 again"
            ),
        ));
    }
    DagErrors(errors)
}

/// The handler steps of a DAG, mutably.
fn handler_steps(handlers: &mut super::Handlers) -> impl Iterator<Item = &mut super::Step> {
    let h = handlers;
    [&mut h.success, &mut h.failure, &mut h.abort, &mut h.exit]
        .into_iter()
        .flatten()
}

/// Parse and validate one YAML document as a DAG.
fn parse_document(mut root: Value, default_name: &str) -> Result<Dag, DagErrors> {
    root.apply_merge()
        .map_err(|err| DagError::new("", format!("invalid YAML merge key (<<): {err}")))?;
    let mut report = Report::default();
    guard::check_nul(&root, "", &mut report);
    defaults::apply(&mut root, &mut report);
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
    let drafts = top.steps.unwrap_or_else(|| {
        report.error("steps", no_steps_message());
        StepsDraft::default()
    });
    let kind = dag_kind(top.kind, &drafts, &mut report);
    let mut steps = resolve(drafts.drafts, kind, drafts.keyed, &mut report);
    let mut handlers = top.handlers;
    if let Some(shell) = &top.shell {
        let handler_steps = handler_steps(&mut handlers.handlers);
        // A call step runs no shell.
        let shell_steps = steps.iter_mut().chain(handler_steps);
        for step in shell_steps.filter(|step| step.call.is_none()) {
            step.shell.get_or_insert_with(|| shell.clone());
        }
    }
    check_names(&handlers, &steps, &mut report);
    queueing::check_schedules(
        "schedule",
        &top.schedule,
        top.timezone.as_deref(),
        &mut report,
    );
    for (field, list) in [
        ("schedule.stop", &top.run_policy.stop),
        ("schedule.restart", &top.run_policy.restart),
    ] {
        queueing::check_schedules(field, list, top.timezone.as_deref(), &mut report);
    }
    if !top.schedule.is_empty() {
        super::params::warn_unschedulable(&top.params, &mut report);
    }
    let warnings = report.finish()?;
    Ok(Dag {
        locals: Vec::new(),
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
        handlers: handlers.handlers,
        preconditions: top.preconditions,
        run_policy: top.run_policy,
        max_output_size: top.max_output_size,
        worker_selector: top.worker_selector,
        dotenv: top.dotenv,
        working_dir: top.working_dir,
    })
}

/// The file's YAML documents (at least one, `Null` for an empty file), empty ones skipped as
/// Dagu does; `<<` merge keys are applied per document by [`parse_document`].
fn load(yaml: &str) -> Result<Vec<Value>, DagErrors> {
    guard::check_source(yaml)?;
    let invalid = |err: serde_yaml::Error| DagError::new("", format!("invalid YAML: {err}"));
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).map_err(invalid)?;
        if value.is_null() {
            continue;
        }
        if documents.len() == MAX_DOCUMENTS {
            return Err(DagError::new(
                "",
                format!(
                    "the file has more than {MAX_DOCUMENTS} YAML documents (--- separated); \
                     dagrid reads at most {MAX_DOCUMENTS} (the DAG and {} local DAGs), put the \
                     others in files of their own",
                    MAX_DOCUMENTS - 1
                ),
            )
            .into());
        }
        documents.push(value);
    }
    if documents.is_empty() {
        documents.push(Value::Null);
    }
    Ok(documents)
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
        TopKey::Schedule => {
            top.schedule = runpol::schedule(field, value, &mut top.run_policy, report);
        }
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
        TopKey::Shell => top.shell = read_shell(field, value, report),
        TopKey::RetryPolicy => {
            top.run_policy.retry = runpol::retry_policy(field, value, report);
        }
        TopKey::DelaySec => {
            const FIX: &str = "give the wait before the run's first step in whole seconds \
                               (for example 30), or 0 for none";
            top.run_policy.delay_ms = runpol::seconds(field, value, FIX, report);
        }
        TopKey::SkipIfSuccessful => {
            top.run_policy.skip_if_successful = runpol::flag(field, value, report);
        }
        TopKey::RestartWaitSec => {
            const FIX: &str = "give the wait between a scheduled restart's stop and its new run \
                               in whole seconds (for example 10), or 0 for none";
            top.run_policy.restart_wait_ms = runpol::seconds(field, value, FIX, report);
        }
        // Merged into the steps before they are read (`defaults.rs`).
        TopKey::Defaults => {}
        TopKey::MaxOutputSize => top.max_output_size = read_max_output_size(field, value, report),
        TopKey::WorkerSelector => {
            top.worker_selector = queueing::worker_selector(field, value, report)
        }
    }
}

/// `maxOutputSize`: whole bytes, 1 to [`super::MAX_OUTPUT_SIZE_LIMIT`]; 0 means Dagu's default
/// (`None`), as in Dagu.
fn read_max_output_size(field: &str, value: &Value, report: &mut Report) -> Option<u64> {
    let limit = super::MAX_OUTPUT_SIZE_LIMIT;
    let number = match value {
        Value::Null => return None,
        Value::Number(number) => number,
        other => {
            type_error(report, field, "a whole number of bytes", other);
            return None;
        }
    };
    match number.as_u64() {
        Some(0) => None,
        Some(bytes) if bytes <= limit => Some(bytes),
        _ => {
            report.error(
                field,
                format!(
                    "{number} is not a size dagrid takes; give the most bytes of stdout an output \
                     variable may capture, from 1 to {limit} (16 MiB; 0 or absent: 1048576, \
                     Dagu's default); write larger data to a file and output its path"
                ),
            );
            None
        }
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

/// The DAG's `type`, and its warnings. Without `type:`, a file is a chain, as in Dagu ≥ 1.17
/// (`buildType`), unless a step has a `depends:` key: Dagu ≥ 2 refuses that, and such files
/// were written for Dagu's graph, so they run as a graph with a warning. `type: chain` with
/// `depends` is accepted with a warning (see [`super::graph`] for how the edges combine).
fn dag_kind(declared: Option<DagKind>, steps: &StepsDraft, report: &mut Report) -> DagKind {
    let with_depends: Vec<&str> = steps
        .drafts
        .iter()
        .filter(|draft| draft.depends.is_some())
        .map(|draft| draft.field.as_str())
        .collect();
    let listed = || {
        let mut text = with_depends
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if with_depends.len() > 3 {
            text.push_str(&format!(" and {} more", with_depends.len() - 3));
        }
        text
    };
    let kind = match declared {
        Some(DagKind::Graph) => return DagKind::Graph,
        None if !with_depends.is_empty() => {
            report.warn(format!(
                "type: not given and steps use depends ({}), so the steps run as a graph (order \
                 from depends only, as Dagu before 1.17); Dagu 1.17 and later run a file without \
                 type: as a chain and refuse depends there: add type: graph to keep this order \
                 and silence this warning",
                listed()
            ));
            return DagKind::Graph;
        }
        None => DagKind::Chain,
        Some(DagKind::Chain) => {
            if !with_depends.is_empty() {
                report.warn(format!(
                    "type: chain with depends ({}): each step still runs after the previous \
                     item and its depends are added to that edge (depends: [] removes it), as \
                     in Dagu 1.22 to 1.30; Dagu 2 refuses depends in a chain: use type: graph \
                     to order steps by depends alone",
                    listed()
                ));
            }
            DagKind::Chain
        }
    };
    if steps.keyed && steps.drafts.len() > 1 {
        report.warn(
            "steps: given as a map, steps have no file order, so a chain adds no edges between \
             them and they run at once unless depends order them (as in Dagu)"
                .to_owned(),
        );
    }
    kind
}

fn no_steps_message() -> &'static str {
    "the DAG has no steps; add a steps: list with at least one step (- name: … command: …)"
}

/// The steps as written: a list (items are step maps, command strings, or nested lists of
/// them that run in parallel inside a chain), or a map keyed by step name.
fn read_steps(field: &str, value: &Value, report: &mut Report) -> StepsDraft {
    let mut out = StepsDraft::default();
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => {
            report.error(field, no_steps_message());
            return out;
        }
        Value::Mapping(map) => {
            out.keyed = true;
            out.drafts = read_keyed_steps(field, map, report);
            return out;
        }
        other => {
            type_error(report, field, "a list of steps", other);
            return out;
        }
    };
    if items.is_empty() {
        report.error(field, no_steps_message());
    }
    let total: usize = items
        .iter()
        .map(|step| match step {
            Value::Sequence(group) => group.len(),
            _ => 1,
        })
        .sum();
    if too_many(field, total, report) {
        return out;
    }
    for (index, step) in items.iter().enumerate() {
        let at = item(field, index);
        let Value::Sequence(group) = step else {
            out.drafts.push(draft_at(step, at, index, report));
            continue;
        };
        if group.is_empty() {
            report.error(
                &at,
                "an empty list of parallel steps; give it at least one step or remove it",
            );
        }
        for (member, step) in group.iter().enumerate() {
            let member_at = item(&at, member);
            if let Value::Sequence(_) = step {
                report.error(
                    member_at,
                    "a list inside a list of parallel steps; nest steps one level deep only \
                     (- [step, step])",
                );
                continue;
            }
            out.drafts.push(draft_at(step, member_at, index, report));
        }
    }
    out
}

/// True (and reported) when `count` steps are more than [`MAX_STEPS`].
fn too_many(field: &str, count: usize, report: &mut Report) -> bool {
    if count <= MAX_STEPS {
        return false;
    }
    report.error(
        field,
        format!(
            "the DAG has {count} steps; dagrid accepts at most {MAX_STEPS}, split it into \
             smaller DAGs"
        ),
    );
    true
}

/// One step at field path `at`, from item `index` of `steps:`.
fn draft_at(value: &Value, at: String, index: usize, report: &mut Report) -> StepDraft {
    let mut draft = parse_step(value, &at, report);
    draft.item = index;
    draft.field = at;
    draft
}

/// Dagu's map form, `steps: {NAME: {command: …}}`: the key is the step's name (it wins over a
/// `name:` inside, as in Dagu, with a warning when they differ) and the steps are ordered by
/// name, as Dagu's `buildSteps` sorts them.
fn read_keyed_steps(field: &str, map: &Mapping, report: &mut Report) -> Vec<StepDraft> {
    if map.is_empty() {
        report.error(field, no_steps_message());
    }
    if too_many(field, map.len(), report) {
        return Vec::new();
    }
    let mut keyed: Vec<(&str, &Value)> = Vec::with_capacity(map.len());
    for (key, value) in map {
        match key_text(key) {
            Some(name) => keyed.push((name, value)),
            None => report.error(
                field,
                format!("step names must be strings, found {}", describe_key(key)),
            ),
        }
    }
    keyed.sort_by(|a, b| a.0.trim().cmp(b.0.trim()));
    let mut drafts = Vec::with_capacity(keyed.len());
    for (index, (name, value)) in keyed.into_iter().enumerate() {
        let at = child(field, name);
        let mut step = match value {
            Value::Mapping(step) => step.clone(),
            Value::Null => Mapping::new(),
            other => {
                type_error(
                    report,
                    &at,
                    "a step (a map with command: or script:)",
                    other,
                );
                continue;
            }
        };
        let inner = step.get("name").and_then(Value::as_str).map(str::trim);
        if inner.is_some_and(|inner| inner != name.trim()) {
            report.warn(format!(
                "{at}.name: the step is named \"{}\" by its key in steps:, as in Dagu; the \
                 name: inside is ignored",
                name.trim()
            ));
        }
        step.insert("name".into(), name.into());
        drafts.push(draft_at(&Value::Mapping(step), at, index, report));
    }
    drafts
}
