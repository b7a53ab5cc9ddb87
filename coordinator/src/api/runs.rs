//! `/api/v1/runs`: submit runs (one or a batch), show a run with its steps, list runs, read a
//! step's log.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use dagrid_shared::dag::{BoundParam, Dag, DagError, DagErrors};
use dagrid_shared::model::{ParentLink, RunRecord, RunStatus, StepState, StepStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::dags::unknown_dag;
use super::error::ErrorCode;
use super::error::{ApiError, AppJson, ErrorBody};
use super::state::AppState;
use crate::store::admission::{Idempotency, NewRun, Outcome, Submission, Trigger};
use crate::store::validate::{Invalid, RunRequest};
use crate::store::RunFilter;

/// Most runs one batch request may submit.
pub(crate) const MAX_BATCH: usize = 10_000;
/// Most runs one list request returns.
const MAX_LIMIT: usize = 1_000;
/// Most child run ids `GET /api/v1/runs/{id}` shows; `GET /api/v1/runs?parent=` lists all.
pub(crate) const CHILDREN_SHOWN: usize = 100;
/// Largest log file returned whole; a larger one is returned from this many bytes before its end.
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Body of `POST /api/v1/runs`, and each item of a batch. (Serialized only to digest a request
/// sent under an `Idempotency-Key`.)
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRun {
    /// DAG name.
    dag: String,
    /// Params by name, or by 1-based position (`"1"`); strings, numbers or booleans.
    #[serde(default)]
    #[schema(schema_with = params_schema)]
    params: BTreeMap<String, Value>,
    /// `"high"`, `"normal"`, `"low"` or 0..=9; default the DAG's `priority:`, else normal.
    #[serde(default)]
    #[schema(schema_with = priority_schema)]
    priority: Option<Value>,
    /// Start no sooner than this long from now (humantime: `30s`, `5m`); at most 3650 days.
    #[serde(default)]
    delay: Option<String>,
    /// Start no sooner than this time (RFC 3339), at most 3650 days ahead; not together with
    /// `delay`.
    #[serde(default)]
    at: Option<String>,
    /// Overrides the DAG's `dedup:` policy: `active`, `none` or `window:<duration>`.
    #[serde(default)]
    dedup: Option<String>,
    /// A dedup key to use instead of the one computed from the params (1 to 256 bytes).
    #[serde(default)]
    dedup_key: Option<String>,
}

/// The OpenAPI schema of [`SubmitRun::params`]: an object of scalars.
fn params_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let scalar = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(scalar.into())))
        .description(Some(
            "Params by name, or by 1-based position (`\"1\"`); strings, numbers or booleans (null: empty)",
        ))
        .examples([serde_json::json!({ "NAME": "world" })])
        .build()
}

/// The OpenAPI schema of [`SubmitRun::priority`]: a level name or number, or null.
fn priority_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "`high` (8), `normal` (5), `low` (2) or a number 0..=9",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(9)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Default: the DAG's `priority:`, else normal (5); higher runs first",
        ))
        .examples([serde_json::json!("high")])
        .build();
    Schema::OneOf(one_of)
}

/// Body of `POST /api/v1/runs/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBatch {
    /// 1 to 10,000 runs, each as the body of `POST /api/v1/runs`.
    #[schema(value_type = Vec<SubmitRun>, min_items = 1, max_items = 10000)]
    runs: Vec<Object<SubmitRun>>,
}

/// A JSON object read as `T`. serde's derived structs also take an array of their fields in
/// order (`["hello"]` would read as `{"dag": "hello"}`); the API takes objects only, and an
/// array is refused with "invalid type: sequence, expected a JSON object".
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
            .map(Object)
    }
}

/// Body of a `POST /api/v1/runs/batch` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BatchSubmitted {
    /// One per submitted item, in request order.
    runs: Vec<Submitted>,
    /// How many runs were created.
    created: usize,
    /// How many items were deduplicated onto existing runs.
    deduplicated: usize,
}

/// A submitted run: the new run, or with `deduplicated: true` the existing run that holds the
/// same dedup key (and its current status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Submitted {
    id: String,
    dag: String,
    /// `queued` for a new run; the holder's status (null if it has expired) when deduplicated.
    status: Option<RunStatus>,
    deduplicated: bool,
    /// The new run's priority (0..=9); absent when deduplicated.
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    /// Why the new run waits (delayed, queue paused or full), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// When a delayed run is due (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    due_ms: Option<u64>,
}

/// 400 when a list field holds more than [`MAX_BATCH`] items.
fn at_most_a_batch(field: &str, len: usize, code: ErrorCode) -> Result<(), ApiError> {
    if len > MAX_BATCH {
        return Err(ApiError::new(
            code,
            format!("`{field}` has {len} items; send at most {MAX_BATCH} per request"),
        ));
    }
    Ok(())
}

/// Checks submissions against their DAGs ([`crate::store::Store::prepare_runs`]).
async fn prepare(
    state: &AppState,
    items: &[Object<SubmitRun>],
    trigger: Trigger,
) -> Result<Vec<NewRun>, ApiError> {
    let requests: Vec<RunRequest<'_>> = items
        .iter()
        .map(|Object(item)| RunRequest {
            dag: &item.dag,
            params: &item.params,
            priority: item.priority.as_ref(),
            delay: item.delay.as_deref(),
            at: item.at.as_deref(),
            dedup: item.dedup.as_deref(),
            dedup_key: item.dedup_key.as_deref(),
        })
        .collect();
    state
        .store
        .prepare_runs(&requests, trigger)
        .await
        .map_err(|e| match e {
            Invalid::UnknownDag(name) => unknown_dag(&name),
            Invalid::Params { errors, prefix } => {
                ApiError::invalid(ErrorCode::InvalidParams, errors, &prefix)
            }
            Invalid::Submit { errors, prefix } => {
                ApiError::invalid(ErrorCode::InvalidSubmit, errors, &prefix)
            }
            Invalid::Unavailable(e) => e.into(),
        })
}

/// The `Idempotency-Key` request header.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header set (to `true`) when some item was answered from an earlier request
/// with the same `Idempotency-Key` (as Stripe's API does).
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The `Idempotency-Key` of a submit request, if it sent one, with the digest of its body
/// (`route` and every item). 400 `invalid_idempotency_key` for a key that is not 1 to 255
/// bytes of visible ASCII, or that is sent twice.
fn idempotency(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    items: &[Object<SubmitRun>],
) -> Result<Option<Idempotency>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "the Idempotency-Key header {why}; send one key of 1 to 255 bytes of visible \
                 ASCII, new for each request (a UUID is a good key) and the same on its retries"
            ),
        )
    };
    if values.next().is_some() {
        return Err(bad("is sent more than once"));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad("holds bytes other than visible ASCII"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(bad(&format!("is {} bytes", key.len())));
    }
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    for Object(item) in items {
        h.update(b"\n");
        let json = serde_json::to_vec(item)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        h.update(&json);
    }
    let mut digest = hex::encode(h.finalize());
    digest.truncate(32);
    Ok(Some(Idempotency {
        key: state.store.keys().idempotency(key),
        digest,
    }))
}

/// Creates the prepared runs (under `idem`, creating only those an earlier request with the
/// same key did not) and renders them; also says whether some item was replayed. 422
/// `idempotency_key_reused` when the key came with another body.
async fn create(
    state: &AppState,
    runs: &[NewRun],
    idem: Option<Idempotency>,
) -> Result<(Vec<Submitted>, bool), ApiError> {
    let subs = state.store.submit(runs, idem.as_ref()).await?;
    if subs.iter().any(|s| s.outcome == Outcome::KeyReused) {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "the Idempotency-Key header was used in the last 24 hours with another request \
             body; nothing was created. Send a new key for a new request (the same key only \
             to retry the same request)",
        ));
    }
    let replayed = subs
        .iter()
        .any(|s| matches!(s.outcome, Outcome::Replayed | Outcome::ReplayedDeduplicated));
    Ok((submitted(state, runs, subs).await?, replayed))
}

/// The response headers of a submit: `Idempotent-Replayed: true` when some item was replayed.
fn replay_headers(replayed: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if replayed {
        headers.insert(
            IDEMPOTENT_REPLAYED,
            header::HeaderValue::from_static("true"),
        );
    }
    headers
}

/// The API view of each submission, with the current status of deduplicated runs' holders
/// (and of runs an earlier request with the same `Idempotency-Key` created).
async fn submitted(
    state: &AppState,
    runs: &[NewRun],
    subs: Vec<Submission>,
) -> Result<Vec<Submitted>, ApiError> {
    let looked_up = |o: Outcome| o.deduplicated() || o == Outcome::Replayed;
    let dup_ids: Vec<String> = subs
        .iter()
        .filter(|s| looked_up(s.outcome))
        .map(|s| s.id.clone())
        .collect();
    let mut dup_status = state.store.statuses(&dup_ids).await?.into_iter();
    Ok(runs
        .iter()
        .zip(subs)
        .map(|(run, sub)| {
            let dedup = sub.outcome.deduplicated();
            let status = if looked_up(sub.outcome) {
                dup_status.next().flatten()
            } else {
                Some(RunStatus::Queued)
            };
            let reason = sub.reason;
            Submitted {
                id: sub.id,
                dag: run.dag.name.clone(),
                status,
                deduplicated: dedup,
                priority: (!dedup).then(|| run.priority.get()),
                reason,
                due_ms: (sub.outcome == Outcome::Delayed)
                    .then_some(run.due_ms)
                    .flatten(),
            }
        })
        .collect())
}

/// `POST /api/v1/runs`: creates a run and queues its first steps, or makes it wait (delayed,
/// queue paused or at its limit); no run is created when one with the same dedup key is queued
/// or running (or succeeded within the dedup window). A retry with the same `Idempotency-Key`
/// (within 24 h) returns the run the first request created.
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    operation_id = "submitRun",
    tag = "runs",
    summary = "Submit a run of a DAG",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1 to 255 bytes of visible ASCII (a UUID), new for each request and the same on its retries; kept 24 h. A retry with the same key returns the same runs and creates only those the earlier request did not (however it was cut); the key with another body is refused (422 `idempotency_key_reused`)"),
    ),
    request_body = SubmitRun,
    responses(
        (status = 201, description = "Created (queued, delayed or waiting for its queue)", body = Submitted, headers(("Idempotent-Replayed" = String, description = "`true` when some item was answered from an earlier request with the same Idempotency-Key"))),
        (status = 200, description = "Deduplicated: a run with the same dedup key exists; its id and status, `deduplicated: true`", body = Submitted, headers(("Idempotent-Replayed" = String, description = "`true` when some item was answered from an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Malformed JSON (`malformed_json`) or a bad Idempotency-Key header (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 404, description = "Unknown DAG (`unknown_dag`)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json (`json_content_type_required`)", body = ErrorBody),
        (status = 422, description = "Unknown field, wrong type or not a JSON object (`invalid_body`); undeclared params (when the DAG declares named ones), a typed param's value that does not fit its type, enum, bounds or pattern, or a required one missing, a param value with a NUL byte or over 32 KiB (32,768 bytes), or values over 64 KiB (65,536 bytes) together (`invalid_params`); bad priority, delay, at (at most 3650 days ahead), dedup or dedup_key (`invalid_submit`); an Idempotency-Key used with another body (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<Object<SubmitRun>>,
) -> Result<impl IntoResponse, ApiError> {
    let items = std::slice::from_ref(&body);
    let idem = idempotency(&state, &headers, "runs", items)?;
    let runs = prepare(&state, items, Trigger::Api).await?;
    let (mut out, replayed) = create(&state, &runs, idem).await?;
    let one = out
        .pop()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the submit returned nothing"))?;
    let code = if one.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, replay_headers(replayed), AppJson(one)))
}

/// `POST /api/v1/runs/batch`: validates every item first, then creates the runs with
/// pipelined writes, answering in request order. A request cut while its runs are being
/// written (a dropped connection, the coordinator killed) leaves some of them created: a retry
/// with the same `Idempotency-Key` returns every item's run, creating only the missing ones.
#[utoipa::path(
    post,
    path = "/api/v1/runs/batch",
    operation_id = "submitRunBatch",
    tag = "runs",
    summary = "Submit up to 10,000 runs at once, all or nothing",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1 to 255 bytes of visible ASCII (a UUID), new for each request and the same on its retries; kept 24 h. A retry with the same key returns the same runs and creates only those the earlier request did not (however it was cut); the key with another body is refused (422 `idempotency_key_reused`)"),
    ),
    request_body = SubmitBatch,
    responses(
        (status = 201, description = "At least one run created", body = BatchSubmitted, headers(("Idempotent-Replayed" = String, description = "`true` when some item was answered from an earlier request with the same Idempotency-Key"))),
        (status = 200, description = "Every item was deduplicated", body = BatchSubmitted, headers(("Idempotent-Replayed" = String, description = "`true` when some item was answered from an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Malformed JSON (`malformed_json`), empty batch (`empty_batch`), more than 10,000 runs (`batch_too_large`) or a bad Idempotency-Key header (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 404, description = "An item names an unknown DAG (`unknown_dag`)", body = ErrorBody),
        (status = 413, description = "Body over 32 MiB (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json (`json_content_type_required`)", body = ErrorBody),
        (status = 422, description = "An invalid item (as for one run); the whole batch is rejected, fields named `runs[i].…`; or an Idempotency-Key used with another body (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(Object(body)): AppJson<Object<SubmitBatch>>,
) -> Result<impl IntoResponse, ApiError> {
    if body.runs.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyBatch,
            "`runs` is empty; send at least one run",
        ));
    }
    at_most_a_batch("runs", body.runs.len(), ErrorCode::BatchTooLarge)?;
    let idem = idempotency(&state, &headers, "batch", &body.runs)?;
    let runs = prepare(&state, &body.runs, Trigger::Batch).await?;
    let (out, replayed) = create(&state, &runs, idem).await?;
    let deduplicated = out.iter().filter(|s| s.deduplicated).count();
    let created = out.len() - deduplicated;
    let code = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        replay_headers(replayed),
        AppJson(BatchSubmitted {
            runs: out,
            created,
            deduplicated,
        }),
    ))
}

/// Body of `POST /api/v1/runs/lookup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lookup {
    /// Run ids, at most 10,000.
    #[schema(max_items = 10000)]
    ids: Vec<String>,
}

/// Body of a `POST /api/v1/runs/lookup` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LookedUp {
    /// One per requested id, in request order.
    runs: Vec<RunStatusOf>,
}

/// The status of one run (null: no such run).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunStatusOf {
    id: String,
    status: Option<RunStatus>,
}

/// `POST /api/v1/runs/lookup`: the status of each run, in one pipelined read, so a client can
/// follow a whole batch cheaply.
#[utoipa::path(
    post,
    path = "/api/v1/runs/lookup",
    operation_id = "lookupRuns",
    tag = "runs",
    summary = "The status of many runs in one request (a read; allowed while draining)",
    request_body = Lookup,
    responses(
        (status = 200, description = "The status of each id, null for unknown ids", body = LookedUp),
        (status = 400, description = "Malformed JSON (`malformed_json`) or more than 10,000 ids (`too_many_ids`)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json (`json_content_type_required`)", body = ErrorBody),
        (status = 422, description = "Wrong body shape (`invalid_body`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn lookup(
    State(state): State<AppState>,
    AppJson(Object(body)): AppJson<Object<Lookup>>,
) -> Result<impl IntoResponse, ApiError> {
    at_most_a_batch("ids", body.ids.len(), ErrorCode::TooManyIds)?;
    let statuses = state.store.statuses(&body.ids).await?;
    let runs: Vec<RunStatusOf> = body
        .ids
        .into_iter()
        .zip(statuses)
        .map(|(id, status)| RunStatusOf { id, status })
        .collect();
    Ok(AppJson(LookedUp { runs }))
}

/// A run as the API shows it; steps in DAG file order, then the handler steps that were queued
/// (each with `handler`: `success`, `failure`, `abort` or `exit`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunView {
    id: String,
    dag: String,
    status: RunStatus,
    /// Every declared param with its bound value, in declared order.
    params: Vec<BoundParam>,
    /// When the run was submitted (ms since the epoch).
    created_ms: u64,
    /// When its first step started (ms).
    started_ms: Option<u64>,
    /// When it finished (ms).
    finished_ms: Option<u64>,
    /// 0..=9, higher runs first.
    priority: u8,
    /// The queue it is admitted through.
    queue: String,
    /// Why a queued run waits (delayed, queue paused, no capacity), else null.
    reason: Option<String>,
    /// The labels a worker must have to run its steps (its DAG version's `workerSelector`,
    /// canonical: `gpu=true,region=eu`); left out when none. A step with its own
    /// `workerSelector` uses that instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_selector: Option<String>,
    /// Why its ready steps wait for a worker (`no live worker matches gpu=true`, one clause
    /// per selector of its queued steps, joined by `; `), in `GET /api/v1/runs/{id}` only;
    /// left out when they do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<String>,
    /// When a delayed run is due (ms).
    due_ms: Option<u64>,
    /// What created it: `api`, `batch`, `schedule`, `retry`, or `call` for a child run of a
    /// call step (Dagu `call:` / `run:`).
    trigger: String,
    /// For a child run of a call step: the parent run, its call step and how deep the child
    /// is (1: a child of a top-level run); null for a top-level run.
    parent: Option<ParentLink>,
    /// The child runs of its call steps, every attempt's (`GET /api/v1/runs/{id}`, stop and
    /// retry only); left out when it has none. List them all, with their status, with
    /// `GET /api/v1/runs?parent=<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<ChildRuns>,
    /// The cron slot (ms) of a scheduled run.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_slot_ms: Option<u64>,
    /// How many times the run was retried automatically under its DAG's `retry_policy`
    /// (left out when 0).
    #[serde(skip_serializing_if = "is_zero")]
    auto_retries: u32,
    /// When a failed run's next automatic retry (`retry_policy`) is due (ms), while one waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_at_ms: Option<u64>,
    /// For a failed or aborted run: the step that failed last (or was aborted)…
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_step: Option<String>,
    /// …and its error: the dead-letter view of `GET /api/v1/runs?status=failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Its steps in DAG file order, then its handler steps that were queued, marked by their
    /// `handler` field (`GET /api/v1/runs/{id}` and stop only).
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepView>>,
}

/// The child runs of a run (its call steps' runs, Dagu `call:`), in creation order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChildRuns {
    /// How many child runs it has.
    total: u64,
    /// The ids of the first 100 (creation order); page through all of them with
    /// `GET /api/v1/runs?parent=<id>` (and its `cursor`).
    #[schema(max_items = 100)]
    ids: Vec<String>,
}

/// Serde helper: leave a zero count out.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The step whose failure ended a failed or aborted run (the failed step that finished last,
/// else the aborted one that did), and its error.
fn last_error(run: &RunRecord) -> Option<(String, String)> {
    if !matches!(run.status, RunStatus::Failed | RunStatus::Aborted) {
        return None;
    }
    let pick = |status: StepStatus| {
        run.steps
            .iter()
            .filter(|(_, s)| s.status == status)
            .max_by_key(|(_, s)| s.finished_ms)
            .map(|(name, s)| {
                let why = s.error.clone().unwrap_or_else(|| match s.exit_code {
                    Some(code) => format!("exited with code {code}"),
                    None => "failed".to_string(),
                });
                (name.clone(), why)
            })
    };
    pick(StepStatus::Failed).or_else(|| pick(StepStatus::Aborted))
}

/// A step of a run: its name and its state. A call step's `children` (how many child runs
/// its current attempt waits for; list them with `GET /api/v1/runs?parent=<run id>`) is left
/// out when 0, as on every other step.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RunStep)]
pub(crate) struct StepView {
    name: String,
    /// The steps this one runs after (Dagu `depends`), from the DAG version the run was
    /// submitted with: what the web UI draws the run's graph from.
    depends: Vec<String>,
    /// The step's own `workerSelector` (canonical: `gpu=true`; `""` for `{}`, any worker),
    /// which replaces the run's `worker_selector` for it; left out when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_selector: Option<String>,
    #[serde(flatten)]
    state: StepState,
}

fn run_view(run: RunRecord, dag: Option<&Dag>, with_steps: bool) -> RunView {
    let (failed_step, error) = last_error(&run).unzip();
    let steps = with_steps.then(|| {
        let mut states = run.steps.clone();
        let order: Vec<String> = match dag {
            // Handler steps (Dagu `handlerOn`, marked `handler`) after the main steps.
            Some(d) => d
                .steps
                .iter()
                .chain(d.handlers.iter().map(|(_, step)| step))
                .map(|s| s.name.clone())
                .collect(),
            None => states.keys().cloned().collect(),
        };
        let depends: HashMap<&str, &[String]> = dag
            .map(|d| {
                d.steps
                    .iter()
                    .map(|s| (s.name.as_str(), s.depends.as_slice()))
                    .collect()
            })
            .unwrap_or_default();
        // The steps' own worker selectors (most DAGs: none).
        let selectors: HashMap<&str, String> = dag
            .map(|d| {
                d.steps
                    .iter()
                    .chain(d.handlers.iter().map(|(_, step)| step))
                    .filter_map(|s| {
                        Some((s.name.as_str(), s.worker_selector.as_ref()?.canonical()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        order
            .into_iter()
            .filter_map(|name| {
                let state = states.remove(&name)?;
                let depends = depends
                    .get(name.as_str())
                    .map(|d| d.to_vec())
                    .unwrap_or_default();
                let worker_selector = selectors.get(name.as_str()).cloned();
                Some(StepView {
                    name,
                    depends,
                    worker_selector,
                    state,
                })
            })
            .collect()
    });
    RunView {
        id: run.id,
        dag: run.dag,
        status: run.status,
        params: run.params,
        created_ms: run.created_ms,
        started_ms: run.started_ms,
        finished_ms: run.finished_ms,
        priority: run.priority.get(),
        queue: run.queue,
        reason: run.reason.filter(|_| run.status == RunStatus::Queued),
        worker_selector: (!run.selector.is_empty()).then(|| run.selector.clone()),
        waiting_for: None,
        due_ms: run.due_ms,
        trigger: run.trigger,
        parent: run.parent,
        children: None,
        schedule_slot_ms: run.slot_ms,
        auto_retries: run.auto_retries,
        retry_at_ms: run.retry_at_ms.filter(|_| run.status == RunStatus::Failed),
        failed_step,
        error,
        steps,
    }
}

/// `POST /api/v1/runs/{id}/stop`: stops a queued or running run. Its queued steps are removed;
/// its running steps get their stop signal (SIGTERM unless `signalOnStop`), SIGKILL after the
/// DAG's `maxCleanUpTimeSec` (default 5 s), on whichever worker runs them, within one worker
/// heartbeat; the run ends `aborted`, once its `handlerOn` cancel and exit handlers (if any,
/// in a run that started) have run: until then it stays `running`, and a second stop ends the
/// exit handler at once.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/stop",
    operation_id = "stopRun",
    tag = "runs",
    summary = "Stop a queued or running run (it ends aborted)",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Stopped; the run with its steps: `aborted`, or `running` while its cancel and exit handlers run", body = RunView),
        (status = 404, description = "Unknown run (`unknown_run`)", body = ErrorBody),
        (status = 409, description = "The run has finished already (`run_finished`), or it kept changing under other writers while being stopped (`conflict`: try again)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = crate::store::stop::stop_run(&state.store, &id, RunStatus::Aborted, |_| {
        "stopped on request".to_string()
    })
    .await?;
    match outcome {
        crate::store::stop::StopOutcome::Finished(status) => Err(ApiError::new(ErrorCode::RunFinished, format!(
                "run {id} has already finished ({status}); only a queued or running run can be stopped"
            ),
        )),
        crate::store::stop::StopOutcome::Stopped => full_view(&state, &id).await,
    }
}

/// `GET /api/v1/runs/{id}`: the run and its steps.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    operation_id = "getRun",
    tag = "runs",
    summary = "Show a run and its steps",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run with its steps", body = RunView),
        (status = 404, description = "Unknown run (`unknown_run`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    full_view(&state, &id).await
}

/// Run `id` with its steps in DAG file order; 404 when unknown.
async fn full_view(state: &AppState, id: &str) -> Result<AppJson<RunView>, ApiError> {
    let run = state.store.run(id).await?.ok_or_else(|| unknown_run(id))?;
    let dag = state.store.spec(&run.spec).await?;
    // The selectors of the steps on their ready streams (queued, with an entry): each step's
    // own, else the run's.
    let selectors: std::collections::BTreeSet<String> = run
        .steps
        .iter()
        .filter(|(name, s)| s.status == StepStatus::Queued && run.entries.contains_key(*name))
        .map(|(name, _)| match &dag {
            Some(dag) => dag.selector_of(name),
            None => run.selector.clone(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    // Those no live worker may take.
    let waiting_for = if selectors.is_empty() {
        None
    } else {
        let workers = state.store.workers().await?;
        let unmatched: Vec<String> = selectors
            .into_iter()
            .filter(|s| crate::store::views::matching_workers(&workers, s) == 0)
            .map(|s| format!("no live worker matches {s}"))
            .collect();
        (!unmatched.is_empty()).then(|| unmatched.join("; "))
    };
    let (total, ids) = state.store.children(id, 0, CHILDREN_SHOWN).await?;
    let mut view = run_view(run, dag.as_deref(), true);
    view.waiting_for = waiting_for;
    view.children = (total > 0).then_some(ChildRuns { total, ids });
    Ok(AppJson(view))
}

fn unknown_run(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownRun,
        format!("no run with id \"{id}\"; list runs with GET /api/v1/runs"),
    )
}

/// Query of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only runs of this DAG.
    dag: Option<String>,
    /// Only runs with this status.
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// Page size, 1..=1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only runs with this trigger: `api`, `batch`, `schedule` or `call` (child runs).
    trigger: Option<String>,
    /// Only runs one of whose params, written `NAME=value` (a positional one: its value),
    /// contains this text (case-sensitive): tells apart the runs of one DAG.
    params: Option<String>,
    /// Only runs created at or after this time, in ms since the Unix epoch.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    since_ms: Option<u64>,
    /// Only the child runs of this run (created by its call steps), oldest first (creation
    /// order); the other filters apply to them. An id that is no run's gives an empty list.
    parent: Option<String>,
}

/// Body of `GET /api/v1/runs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunList {
    /// Newest first (with `parent`: oldest first), without their steps.
    runs: Vec<RunView>,
    /// Pass as `cursor` (with the same filters) for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /api/v1/runs`: runs newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    operation_id = "listRuns",
    tag = "runs",
    summary = "List runs, newest first, a page at a time",
    description = "Filters: `dag` and `status` (by index), `trigger`, `params` (text in one `NAME=value`) and `since_ms` (created at or after). `parent=<run id>` lists that run's child runs (created by its call steps) instead, oldest first (creation order), with the same paging and the other filters applied to them; an id that is no run's gives an empty list, as an unknown `dag` does. A page may hold fewer runs than `limit` while `next_cursor` says there are more: a filtered walk reads at most 50 index pages per request.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs (without their steps)", body = RunList),
        (status = 400, description = "Bad query: unknown parameter, status, limit out of 1..=1000 or since_ms out of range (`bad_query`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::BadQuery, format!("status: {e}")))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::BadQuery,
            format!("limit: {limit} is out of range; use 1 to {MAX_LIMIT}"),
        ));
    }
    if q.since_ms.is_some_and(|t| t > i64::MAX as u64) {
        return Err(ApiError::new(
            ErrorCode::BadQuery,
            "since_ms: out of range; give a time in ms since the Unix epoch, such as 1767225600000",
        ));
    }
    let filter = RunFilter {
        dag: q.dag,
        status,
        before: q.cursor,
        limit,
        trigger: q.trigger.filter(|t| !t.is_empty()),
        params: q.params.filter(|p| !p.is_empty()),
        since_ms: q.since_ms,
        parent: q.parent,
    };
    let (runs, next) = state.store.list_runs(&filter).await?;
    let runs: Vec<RunView> = runs.into_iter().map(|r| run_view(r, None, false)).collect();
    Ok(AppJson(RunList {
        runs,
        next_cursor: next,
    }))
}

/// Query of `GET /api/v1/runs/{id}/steps/{step}/log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// Return the log from this byte on (default 0): a follower passes the
    /// `X-Dagrid-Log-Size` of its previous answer to get only what was written since.
    offset: Option<u64>,
    /// Read this attempt's log instead of the current one's (1 for the first; the step's
    /// `history` lists its earlier attempts).
    attempt: Option<u32>,
}

/// `GET /api/v1/runs/{id}/steps/{step}/log?offset=N`: the step's log as bytes
/// (`text/plain`), from byte `offset` (default 0) of the current attempt's log.
///
/// The full file when it is readable from this coordinator (same machine as the worker; at most
/// its last 8 MiB), else the tail kept in Redis: the last 16 KiB of the combined output, stored
/// with the final report and, while the step runs, at most once a second when its output grew.
/// Headers:
/// * `X-Dagrid-Log-Source`: `file` or `tail`;
/// * `X-Dagrid-Log-Size`: the bytes of the log written so far (file length, or the attempt's
///   total output when the tail was stored); pass it as the next `offset` to follow;
/// * `X-Dagrid-Log-Offset`: where the body starts in the log; above the requested `offset`
///   when the bytes in between are no longer available (not in the tail, or beyond the 8 MiB
///   of a file), so a follower can say how many were skipped; an `offset` beyond the size
///   gives an empty body starting at the size;
/// * `X-Dagrid-Log-Attempt`: the attempt the log belongs to (absent for a tail stored by an
///   older version); a new attempt's log starts again at byte 0;
/// * `X-Dagrid-Step-Status`: the step's status, read before the log, so once it is final
///   (`succeeded`, `failed`, `skipped`, `aborted`) the body holds the log to its end.
///
/// A running step whose output has not been published yet (its first second) answers an
/// empty body of size 0.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/steps/{step}/log",
    operation_id = "getStepLog",
    tag = "runs",
    summary = "A step's log as text",
    params(
        ("id" = String, Path, description = "Run id"),
        ("step" = String, Path, description = "Step name"),
        ("offset" = Option<u64>, Query, description = "Return the log from this byte on (default 0); pass the previous answer's `X-Dagrid-Log-Size` to follow"),
        ("attempt" = Option<u32>, Query, description = "An earlier attempt's log (its file, when this coordinator can read it; else the Redis tail if it still holds that attempt); default the current attempt"),
    ),
    responses(
        (status = 200, description = "The log (the last 8 MiB of a larger file)", content_type = "text/plain; charset=utf-8", body = String,
            headers(
                ("X-Dagrid-Log-Source" = String, description = "`file` (the worker's full log file) or `tail` (the tail kept in Redis)"),
                ("X-Dagrid-Log-Size" = u64, description = "Bytes of the log written so far: the next `offset`"),
                ("X-Dagrid-Log-Offset" = u64, description = "Where the body starts in the log (above `offset` when bytes in between are gone)"),
                ("X-Dagrid-Log-Attempt" = u32, description = "The attempt the log belongs to"),
                ("X-Dagrid-Step-Status" = String, description = "The step's status, read before the log"),
            )),
        (status = 400, description = "`offset` is not a whole number of bytes (`bad_query`)", body = ErrorBody),
        (status = 404, description = "Unknown run (`unknown_run`), step (`unknown_step`) or attempt (`unknown_attempt`), or no log (`no_log_yet`, `no_log`, `log_not_reachable`: an earlier attempt's file is on another machine)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn log(
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::BadQuery,
            format!(
                "{}; offset is a byte position in the log, a whole number such as ?offset=0",
                e.body_text()
            ),
        )
    })?;
    let offset = q.offset.unwrap_or(0);
    let run = state
        .store
        .run(&id)
        .await?
        .ok_or_else(|| unknown_run(&id))?;
    let Some(st) = run.steps.get(&step) else {
        let names: Vec<&str> = run.steps.keys().map(String::as_str).collect();
        return Err(ApiError::new(
            ErrorCode::UnknownStep,
            format!(
                "run {id} has no step \"{step}\"; its steps are: {}",
                names.join(", ")
            ),
        ));
    };
    let status = st.status.as_str();
    if let Some(n) = q.attempt.filter(|n| *n != st.attempt) {
        return earlier_attempt_log(&state, &id, &step, st, n, offset).await;
    }
    if let Some(path) = &st.log_path {
        if let Some(part) = read_log_file(path, offset).await {
            let attempt = attempt_of_log_file(path).or(Some(st.attempt));
            return Ok(log_response("file", part, attempt, status));
        }
    }
    match state.store.log_tail(&id, &step).await? {
        Some(t) => {
            let start = t.size - t.tail.len() as u64;
            let from = offset.clamp(start, t.size);
            let body = t.tail[(from - start) as usize..].to_vec();
            let part = LogPart {
                start: from,
                size: t.size,
                body,
            };
            Ok(log_response("tail", part, t.attempt, status))
        }
        // Running with no output yet, or finished on a worker with no output at all (its
        // final report stores no tail then: complete_step.lua).
        None if st.status == StepStatus::Running
            || (st.status.is_final() && st.worker.is_some()) =>
        {
            let part = LogPart {
                start: 0,
                size: 0,
                body: Vec::new(),
            };
            Ok(log_response("tail", part, Some(st.attempt), status))
        }
        None if matches!(
            st.status,
            StepStatus::Pending | StepStatus::Queued | StepStatus::Retrying
        ) =>
        {
            Err(ApiError::new(
                ErrorCode::NoLogYet,
                format!("step \"{step}\" has not run yet (it is {status}); try again later"),
            ))
        }
        None => Err(ApiError::new(
            ErrorCode::NoLog,
            format!("no log was kept for step \"{step}\" (it is {status})"),
        )),
    }
}

/// The log of attempt `n` of a step, an attempt kept in its `history`: its file when this
/// coordinator can read it, else the Redis tail if that still holds attempt `n` (the tail
/// holds the latest attempt that wrote one), else 404 `log_not_reachable`.
async fn earlier_attempt_log(
    state: &AppState,
    id: &str,
    step: &str,
    st: &StepState,
    n: u32,
    offset: u64,
) -> Result<axum::response::Response, ApiError> {
    let Some(rec) = st.history.iter().find(|r| r.attempt == n) else {
        let kept: Vec<String> = st
            .history
            .iter()
            .map(|r| r.attempt.to_string())
            .chain(std::iter::once(st.attempt.to_string()))
            .collect();
        return Err(ApiError::new(
            ErrorCode::UnknownAttempt,
            format!(
                "step \"{step}\" of run {id} has no attempt {n} on record; its attempts are: {}",
                kept.join(", ")
            ),
        ));
    };
    let status = rec.status.as_str();
    if let Some(path) = &rec.log_path {
        if let Some(part) = read_log_file(path, offset).await {
            return Ok(log_response("file", part, Some(n), status));
        }
    }
    if let Some(t) = state.store.log_tail(id, step).await? {
        if t.attempt == Some(n) {
            let start = t.size - t.tail.len() as u64;
            let from = offset.clamp(start, t.size);
            let body = t.tail[(from - start) as usize..].to_vec();
            let part = LogPart {
                start: from,
                size: t.size,
                body,
            };
            return Ok(log_response("tail", part, Some(n), status));
        }
    }
    let place = match (&rec.log_path, &rec.worker) {
        (Some(p), Some(w)) => format!("the file {p} on worker {w}"),
        (Some(p), None) => format!("the file {p}"),
        _ => "not recorded".to_string(),
    };
    Err(ApiError::new(
        ErrorCode::LogNotReachable,
        format!(
            "attempt {n} of step \"{step}\" logged to {place}, which this coordinator cannot \
             read (or there is none: a worker makes no file for an attempt that succeeded \
             within a second printing at most 16 KiB, or nothing); Redis keeps the tail of the \
             latest attempt only. Read the file on that machine, or run a coordinator beside \
             the worker"
        ),
    ))
}

/// Bytes `start..start + body.len()` of a log whose `size` bytes are written so far.
#[derive(Debug)]
struct LogPart {
    start: u64,
    size: u64,
    body: Vec<u8>,
}

/// The attempt number in a worker's log file name (`<run>.<step>.<attempt>.log`).
fn attempt_of_log_file(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?.strip_suffix(".log")?;
    name.rsplit('.').next()?.parse().ok()
}

/// The log file from byte `offset` (at most its last [`MAX_LOG_BYTES`]); `None` when it cannot
/// be read here.
async fn read_log_file(path: &str, offset: u64) -> Option<LogPart> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await.ok()?;
    // The file may still grow: read up to the length seen now, so the size stays exact.
    let size = f.metadata().await.ok()?.len();
    let start = offset.max(size.saturating_sub(MAX_LOG_BYTES)).min(size);
    f.seek(std::io::SeekFrom::Start(start)).await.ok()?;
    let mut body = Vec::new();
    f.take(size - start).read_to_end(&mut body).await.ok()?;
    Some(LogPart {
        start,
        size: start + body.len() as u64,
        body,
    })
}

fn log_response(
    source: &'static str,
    part: LogPart,
    attempt: Option<u32>,
    status: &'static str,
) -> axum::response::Response {
    let mut headers = axum::http::HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), v);
        }
    };
    set("x-dagrid-log-source", source.to_string());
    set("x-dagrid-log-size", part.size.to_string());
    set("x-dagrid-log-offset", part.start.to_string());
    set("x-dagrid-step-status", status.to_string());
    if let Some(a) = attempt {
        set("x-dagrid-log-attempt", a.to_string());
    }
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (headers, part.body).into_response()
}

/// Body of `POST /api/v1/runs/{id}/retry`; every field is optional and an empty body is `{}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryRun {
    /// Run only this step again (Dagu's `retry --step`); its downstream steps keep their
    /// state unless `downstream` is set. Absent: every failed or aborted step and everything
    /// downstream of them.
    #[serde(default)]
    step: Option<String>,
    /// With `step`: the step and all its descendants run again.
    #[serde(default)]
    downstream: bool,
    /// The retried steps run even if their own `preconditions` do not hold (Dagu's
    /// `--bypass-preconditions`); DAG-level preconditions still apply.
    #[serde(default)]
    ignore_preconditions: bool,
}

/// `POST /api/v1/runs/{id}/retry` `{"step"?, "downstream"?, "ignore_preconditions"?}`: runs a
/// finished run again as a new attempt of the same run id (Dagu's `retry`). Without `step`:
/// every failed or aborted step and everything downstream of them; succeeded steps keep their
/// state and outputs. With `step`: that step only, or with `downstream: true` it and its
/// descendants. The run becomes `running` at once and counts as active in its queue again,
/// even if the queue is at its `maxConcurrency` or paused (a retry is an operator's decision;
/// new runs wait behind it). Each retried step's previous attempt stays in its `history`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/retry",
    operation_id = "retryRun",
    tag = "runs",
    summary = "Run a finished run's failed steps (or one step) again, as a new attempt",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = RetryRun, description = "Optional; an empty body retries every failed or aborted step"),
    responses(
        (status = 200, description = "Retried; the run (now running) with its steps", body = RunView),
        (status = 400, description = "Malformed JSON (`malformed_json`)", body = ErrorBody),
        (status = 404, description = "Unknown run (`unknown_run`) or step (`unknown_step`, listing the steps)", body = ErrorBody),
        (status = 409, description = "The run is queued or running (`run_active`), no step failed (`nothing_to_retry`), the step's dependency did not succeed (`dependency_not_succeeded`), or the run kept changing under other writers (`conflict`: try again)", body = ErrorBody),
        (status = 422, description = "Unknown field, wrong type (naming the field) or not a JSON object (`invalid_body`), `downstream` without `step` (`invalid_retry`)", body = ErrorBody),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or the coordinator is draining (`draining`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // Read like `AppJson` (without its Content-Type check, since the body is optional), so a
    // wrongly typed field is named: "downstream: invalid type: string …".
    let body: RetryRun = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRun::default()
    } else {
        let axum::Json(Object(body)) = axum::Json::<Object<RetryRun>>::from_bytes(&body)?;
        body
    };
    let selection = crate::plan::RetrySelection {
        step: body.step,
        downstream: body.downstream,
        ignore_preconditions: body.ignore_preconditions,
    };
    let applied = state
        .store
        .apply_cas(&id, |run, dag| {
            crate::plan::retry(dag, run, &selection, dagrid_shared::model::now_ms())
        })
        .await?
        .map_err(|e| retry_error(&id, e))?;
    tracing::info!(run.id = %id, steps = applied.transition.tasks.len(), "run retried");
    full_view(&state, &id).await
}

/// The API error of a [`crate::plan::RetryError`].
fn retry_error(id: &str, e: crate::plan::RetryError) -> ApiError {
    use crate::plan::RetryError as E;
    let message = format!("run {id}: {e}");
    match e {
        E::Active(_) => ApiError::new(ErrorCode::RunActive, message),
        E::UnknownStep { .. } => ApiError::new(ErrorCode::UnknownStep, message),
        E::DownstreamWithoutStep => ApiError::invalid(
            ErrorCode::InvalidRetry,
            DagErrors(vec![DagError {
                field: "downstream".into(),
                message: e.to_string(),
            }]),
            "",
        ),
        E::NothingToRetry => ApiError::new(ErrorCode::NothingToRetry, message),
        E::DependencyNotSucceeded { .. } => {
            ApiError::new(ErrorCode::DependencyNotSucceeded, message)
        }
    }
}
