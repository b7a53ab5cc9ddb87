//! `/api/v1/dags`: list, show and register DAGs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dagrid_shared::dag::{Dag, MAX_DAG_BYTES};
use dagrid_shared::model::DagRecord;
use serde::{Deserialize, Serialize};

use super::error::ErrorCode;
use super::error::{ApiError, AppJson, ErrorBody};
use super::state::AppState;
use crate::store::RegisterError;

/// A DAG as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DagView {
    name: String,
    description: Option<String>,
    /// Digest of the current version.
    digest: String,
    /// When the current version was registered (ms since the epoch).
    updated_ms: u64,
    params: Vec<dagrid_shared::dag::ParamDef>,
    steps: Vec<StepView>,
    warnings: Vec<String>,
    /// The queue its runs go through (its `queue:`, else its name).
    queue: String,
    /// Default priority of its runs.
    priority: u8,
    /// `maxActiveRuns` (null: no limit).
    max_active_runs: Option<u32>,
    /// Cron expressions as written.
    schedule: Vec<String>,
    /// The next (up to 3) fire times, ms since the epoch.
    next_fire_ms: Vec<u64>,
    /// The YAML source as registered (`GET /api/v1/dags/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// `POST /api/v1/dags` only, when the file has more than one YAML document: the names of
    /// the local DAGs registered with this one (`<DAG>.<local>`, in document order), each a
    /// DAG of its own (`GET /api/v1/dags/{name}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locals: Vec<String>,
}

/// Body of `GET /api/v1/dags`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DagList {
    /// Every registered DAG, by name.
    dags: Vec<DagView>,
}

/// A step of a DAG, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DagStep)]
struct StepView {
    name: String,
    depends: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    /// A call step's DAG (Dagu `call:`; `${…}` is expanded when the step runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<String>,
}

/// The parser's warnings, plus one for a `queue:` this coordinator has no limit for.
fn warnings(state: &AppState, dag: &Dag) -> Vec<String> {
    let mut out = dag.warnings.clone();
    if let Some(q) = &dag.queue {
        if !state.store.queues.contains_key(q) {
            out.push(format!(
                "queue: \"{q}\" is not configured on this coordinator, so its runs have no queue \
                 limit; configure it with --queue {q}=N (or queues: in --config)"
            ));
        }
    }
    out
}

fn view(state: &AppState, dag: &Dag, record: &DagRecord, with_source: bool) -> DagView {
    DagView {
        queue: state.store.queue_of(dag).name,
        priority: dag.priority.unwrap_or_default().get(),
        max_active_runs: dag.max_active_runs,
        schedule: dag.schedule.clone(),
        next_fire_ms: crate::scheduler::next_fire_times(dag, state.store.timezone.as_deref(), 3),
        name: dag.name.clone(),
        description: dag.description.clone(),
        digest: record.digest.clone(),
        updated_ms: record.updated_ms,
        params: dag.params.clone(),
        steps: dag
            .steps
            .iter()
            .map(|s| StepView {
                name: s.name.clone(),
                depends: s.depends.clone(),
                command: s.command.clone(),
                script: s.script.clone(),
                output: s.output.clone(),
                call: s.call.as_ref().map(|c| c.dag.clone()),
            })
            .collect(),
        warnings: warnings(state, dag),
        source: with_source.then(|| record.source.clone()),
        locals: Vec::new(),
    }
}

/// `GET /api/v1/dags`: every registered DAG, by name.
#[utoipa::path(
    get,
    path = "/api/v1/dags",
    operation_id = "listDags",
    tag = "dags",
    summary = "List the registered DAGs",
    responses(
        (status = 200, description = "Every registered DAG, by name (without its source)", body = DagList),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let dags = state.store.dags().await?;
    let views: Vec<DagView> = dags
        .values()
        .map(|(record, dag)| view(&state, dag, record, false))
        .collect();
    Ok(AppJson(DagList { dags: views }))
}

/// `GET /api/v1/dags/{name}`: one DAG with its YAML source.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{name}",
    operation_id = "getDag",
    tag = "dags",
    summary = "Show one DAG with its YAML source",
    params(("name" = String, Path, description = "DAG name")),
    responses(
        (status = 200, description = "The DAG, with `source`", body = DagView),
        (status = 404, description = "No DAG of that name (`unknown_dag`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (record, dag) = state
        .store
        .dag(&name)
        .await?
        .ok_or_else(|| unknown_dag(&name))?;
    Ok(AppJson(view(&state, &dag, &record, true)))
}

/// The 404 for a DAG name that is not registered.
pub(crate) fn unknown_dag(name: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownDag, format!(
            "no DAG named \"{name}\" is registered; list them with GET /api/v1/dags or register one with POST /api/v1/dags"
        ),
    )
}

/// Query of `POST /api/v1/dags`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterQuery {
    /// Name to use when the file has no `name:` key.
    name: Option<String>,
}

/// `POST /api/v1/dags[?name=NAME]` with a DAG file (YAML) as the body: validates it and makes
/// it the current version of its DAG; nothing is registered when it is invalid. The size
/// ([`MAX_DAG_BYTES`]) is checked before any parsing; the parse runs once, off the async
/// threads (see `Store::register_dag`).
#[utoipa::path(
    post,
    path = "/api/v1/dags",
    operation_id = "registerDag",
    tag = "dags",
    summary = "Register a DAG file (YAML) as the current version of its DAG",
    params(RegisterQuery),
    request_body(
        content = super::schemas::DagFile,
        content_type = "application/yaml",
        description = "A Dagu-format DAG file (any content type is read as text); the schema shows a closed core of the format, docs/dag-format.md has every key",
    ),
    responses(
        (status = 201, description = "Registered; the DAG as registered (without its source), with `locals`: the local DAGs of a multi-document file registered with it", body = DagView),
        (status = 400, description = "Empty body (`empty_body`)", body = ErrorBody),
        (status = 413, description = "DAG file over 1 MiB (1,048,576 bytes) (`dag_too_large`)", body = ErrorBody),
        (status = 422, description = "Not a valid DAG (`invalid_dag`), one `details` entry per problem: also flow collections nested over 64 levels, NUL bytes, param defaults over 32 KiB, a DAG of the file on a cycle of calls (`steps[i].call`, `a → b → a`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    Query(q): Query<RegisterQuery>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let default_name = q.name.as_deref().unwrap_or("");
    if body.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyBody,
            "send the DAG file (YAML) as the request body",
        ));
    }
    if body.len() > MAX_DAG_BYTES {
        return Err(ApiError::new(
            ErrorCode::DagTooLarge,
            format!(
                "the DAG file is {} bytes; dagrid accepts at most {MAX_DAG_BYTES} bytes (1 MiB), \
                 split it into smaller DAGs",
                body.len()
            ),
        ));
    }
    match state.store.register_dag(&body, default_name).await {
        Ok(registered) => {
            let mut body = view(&state, &registered.dag, &registered.record, false);
            body.locals = registered.locals;
            Ok((StatusCode::CREATED, AppJson(body)))
        }
        Err(RegisterError::Invalid(errors)) => {
            Err(ApiError::invalid(ErrorCode::InvalidDag, errors, ""))
        }
        Err(RegisterError::Redis(e)) => Err(e.into()),
        Err(e @ RegisterError::ParseTask(_)) => {
            tracing::error!(cause = %e, "DAG registration failed");
            Err(ApiError::new(
                ErrorCode::Internal,
                "the DAG could not be parsed because of an internal error; see the coordinator log",
            ))
        }
    }
}
