//! `GET /api/v1/events`: run and step state changes as server-sent events.
//!
//! Query: `run=<id>` (repeatable, or a comma list; at most [`MAX_RUNS`] ids), `dag=<name>` and
//! `kind=run|step` (only run events, as `dagrid batch` and `submit --wait` ask, or only step
//! events) filter the events; `since=<event id>` (or the `Last-Event-ID` header, which wins) resumes
//! after that event (`0` for everything the stream still holds). Without either, the stream
//! starts with the changes made after the request.
//!
//! Messages (each `data:` is one JSON line):
//! * `event: ready`, `data: {}` first, once the subscription is live: a client that opens the
//!   stream before submitting and waits for it misses nothing;
//! * `event: run` / `event: step`, `id:` the event's id (its events-stream entry's id,
//!   `<ms>-<seq>`, with `.0` for the first of an entry's two events: a step's change and the
//!   run's that the same transition made), data a
//!   [`dagrid_shared::model::Event`] (`{"run", "dag", "step"?, "status", "attempt"?, "at_ms"}`);
//! * `event: reset`, `id:` the position it continues from (when known), data
//!   `{"reason": "…"}`: events after the client's position are gone (trimmed from the capped
//!   stream, or Redis was unreachable); read the states you follow again;
//! * a `:` comment every [`KEEP_ALIVE`] while nothing happens.
//!
//! The response ends when the coordinator shuts down, so open streams never hold up a drain.
//! Bounds ([`crate::events`]): one request replays at most 10,000 events (then a `reset` at
//! the stream's end); a client more than 4,096 events behind (one that does not read) gets a
//! `reset` and its stream ends; one token holds at most 32 streams at once.
//! Errors: 400 `bad_query` for an unknown parameter, an empty or too long run list, or a bad
//! id in `since` / `Last-Event-ID`; 429 `too_many_streams` beyond the streams of a token.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

use super::auth::Caller;
use super::error::ErrorCode;
use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use crate::events::{EventId, Filter, Item, Kind, MAX_STREAMS_PER_CALLER};

/// Most run ids one subscription may filter on.
pub(crate) const MAX_RUNS: usize = 1000;
/// Time between keep-alive comments on an idle stream (at most: see [`keep_alive_for`]).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive interval under an HTTP idle timeout of `idle_timeout`: [`KEEP_ALIVE`], or a
/// third of the idle timeout when that is shorter (a connection on which no byte moves for
/// the idle timeout is closed, and a quiet stream must not be).
pub(crate) fn keep_alive_for(idle_timeout: Duration) -> Duration {
    KEEP_ALIVE.min(idle_timeout / 3)
}

/// The parsed query of a subscription.
#[derive(Debug, Default)]
struct Params {
    filter: Filter,
    since: Option<EventId>,
}

fn parse_query(raw: Option<&str>) -> Result<Params, ApiError> {
    let mut p = Params::default();
    let mut runs = HashSet::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "run" => {
                for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    runs.insert(id.to_string());
                }
                if runs.len() > MAX_RUNS {
                    return Err(ApiError::new(ErrorCode::BadQuery, format!("run: more than {MAX_RUNS} run ids; filter by dag instead, or open several streams"),
                    ));
                }
            }
            // `dag=` (empty) filters nothing, as `run=` does.
            "dag" => p.filter.dag = Some(v.into_owned()).filter(|d| !d.is_empty()),
            "since" => p.since = Some(parse_id("since", &v)?),
            "kind" => {
                p.filter.kind = match v.as_ref() {
                    "run" => Some(Kind::Run),
                    "step" => Some(Kind::Step),
                    // `kind=` (empty) filters nothing, as `dag=` does.
                    "" => None,
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::BadQuery,
                            format!("kind: {other:?} is not a kind of event; give run or step, or leave kind out for both"),
                        ))
                    }
                }
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadQuery,
                    format!("unknown query parameter {k:?}; use run, dag, kind or since"),
                ))
            }
        }
    }
    p.filter.runs = runs;
    Ok(p)
}

fn parse_id(field: &str, v: &str) -> Result<EventId, ApiError> {
    EventId::parse(v.trim()).ok_or_else(|| {
        ApiError::new(ErrorCode::BadQuery, format!("{field}: {v:?} is not an event id; give the id of the last event received (<ms>-<seq>, or <ms>-<seq>.0), or 0 for every event still kept"),
        )
    })
}

/// One message of the event stream, as the document describes it (documentation only).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct SseMessage {
    /// `ready`, `run`, `step` or `reset`.
    #[schema(example = "run")]
    event: String,
    /// One JSON line: `{}` for `ready`; `{"run", "dag", "step"?, "status", "attempt"?,
    /// "at_ms"}` for `run` and `step`; `{"reason"}` for `reset`.
    data: String,
    /// The event id (`<ms>-<seq>`, or `<ms>-<seq>.0` for the first of an events-stream
    /// entry's two events) of a `run` or `step` message; the position of a `reset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    id: Option<String>,
}

/// `GET /api/v1/events`: see the module doc.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "events",
    tag = "runs",
    summary = "Run and step state changes as server-sent events",
    description = "Messages: `ready` once the subscription is live; `run` and `step` with `id:` the \
                   event id (`<ms>-<seq>`, or `<ms>-<seq>.0` for the first of an entry's two events) and data `{\"run\", \"dag\", \"step\"?, \"status\", \"attempt\"?, \"at_ms\"}`; \
                   `reset` when events after the client's position are gone (refetch state); a \
                   keep-alive comment every 15 s. The stream ends when the coordinator shuts down.",
    params(
        ("run" = Option<String>, Query, description = "Only these runs: repeat the parameter or give a comma list (at most 1,000 ids)"),
        ("dag" = Option<String>, Query, description = "Only runs of this DAG"),
        ("kind" = Option<String>, Query, description = "Only run events (`run`) or only step events (`step`); empty or left out: both", pattern = "^(run|step)?$"),
        ("since" = Option<String>, Query, description = "Resume after this event id (`<ms>-<seq>` or `<ms>-<seq>.0`; `0`: every event still kept); the `Last-Event-ID` header wins", pattern = "^[0-9]{1,19}(-[0-9]{1,19}(\\.0)?)?$"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id, as browsers' EventSource send it", nullable = false, pattern = "^[0-9]{1,19}(-[0-9]{1,19}(\\.0)?)?$"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = SseMessage),
        (status = 400, description = "A bad query parameter (`bad_query`), named in the message", body = ErrorBody),
        (status = 429, description = "The token already holds 32 open streams (`too_many_streams`)", body = ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let mut p = parse_query(raw.as_deref())?;
    if let Some(v) = headers.get("last-event-id") {
        let v = v.to_str().unwrap_or("");
        p.since = Some(parse_id("Last-Event-ID", v)?);
    }
    let caller = caller
        .map(|Extension(Caller(name))| name)
        .unwrap_or_default();
    let Some(slot) = state.events.open_stream(&caller) else {
        return Err(ApiError::new(ErrorCode::TooManyStreams, format!(
                "this token already holds {MAX_STREAMS_PER_CALLER} open event streams; close one first \
                 (one stream can follow many runs: filter with run=a,b or dag=)"
            ),
        ));
    };
    let sub = state
        .events
        .subscribe(p.since, p.filter, state.draining.clone())
        .await;
    let ready = SseEvent::default().event("ready").data("{}");
    // The slot lives as long as the stream: dropping the response frees it.
    let live = stream::unfold((sub, slot), |(mut sub, slot)| async move {
        let item = sub.next().await?;
        Some((to_sse(item), (sub, slot)))
    });
    let body = stream::once(async { ready })
        .chain(live)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(state.keep_alive)))
}

fn to_sse(item: Item) -> SseEvent {
    match item {
        Item::Event(id, e) => {
            let kind = if e.step.is_some() { "step" } else { "run" };
            let data = serde_json::to_string(&*e).unwrap_or_else(|_| "{}".into());
            SseEvent::default()
                .event(kind)
                .id(id.to_string())
                .data(data)
        }
        Item::Reset(at) => {
            let data = json!({
                "reason": "events after your position are no longer available; read the states you follow again"
            })
            .to_string();
            let ev = SseEvent::default().event("reset").data(data);
            match at {
                Some(id) => ev.id(id.to_string()),
                None => ev,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_come_before_the_idle_timeout_closes_a_quiet_stream() {
        assert_eq!(keep_alive_for(Duration::from_secs(60)), KEEP_ALIVE);
        assert_eq!(
            keep_alive_for(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn queries_parse_runs_dag_and_since() {
        let p = parse_query(Some("run=a,b&run=c&dag=etl&since=12-3")).unwrap();
        assert_eq!(p.filter.runs.len(), 3);
        assert_eq!(p.filter.dag.as_deref(), Some("etl"));
        assert_eq!(p.since, EventId::parse("12-3"));
        let p = parse_query(None).unwrap();
        assert!(p.filter.runs.is_empty() && p.filter.dag.is_none() && p.since.is_none());
        // Empty values filter nothing (schemathesis sent `?run=&dag=`).
        let p = parse_query(Some("run=&dag=&kind=")).unwrap();
        assert!(p.filter.runs.is_empty() && p.filter.dag.is_none() && p.filter.kind.is_none());
        let p = parse_query(Some("kind=run")).unwrap();
        assert_eq!(p.filter.kind, Some(Kind::Run));
        let p = parse_query(Some("kind=step")).unwrap();
        assert_eq!(p.filter.kind, Some(Kind::Step));
    }

    #[test]
    fn bad_queries_name_the_field() {
        for (q, field) in [
            ("since=abc", "since"),
            ("kind=runs", "kind"),
            ("runs=a", "unknown query parameter"),
        ] {
            let e = format!("{:?}", parse_query(Some(q)).unwrap_err());
            assert!(e.contains(field), "{q}: {e}");
        }
        let many = (0..=MAX_RUNS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_query(Some(&format!("run={many}"))).is_err());
    }
}
