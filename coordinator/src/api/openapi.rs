//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! and the request and response types' `ToSchema` derives, and served at
//! `GET /api/v1/openapi.json`.
//!
//! Adding a route: annotate its handler with `#[utoipa::path(method, path = "…", …)]` and list
//! the handler in [`ApiDoc`]'s `paths(…)`. The tests below fail when a route of
//! [`super::router`] is missing from the document, when the document names a route the router
//! lacks, and when the document is not valid OpenAPI.

use std::sync::LazyLock;

use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, dags, events, health, metrics, queues, runs, workers};

/// The OpenAPI document of the coordinator's HTTP API. `info.version` is the crate's version
/// (`CARGO_PKG_VERSION`, the workspace version).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dagrid",
        description = "The HTTP API of dagrid's coordinator: register Dagu-format DAGs, submit \
                       and follow runs, read step logs, watch workers and queues. JSON in and \
                       out; every error is `{\"error\": {\"code\", \"message\", \"details\"?}}` \
                       (`ErrorBody`). Writes get 503 `draining` with `Retry-After` while the \
                       coordinator shuts down.",
    ),
    paths(
        health::live,
        health::ready,
        health::cluster,
        metrics::get,
        dags::list,
        dags::register,
        dags::get,
        runs::list,
        runs::submit,
        runs::submit_batch,
        runs::lookup,
        runs::get,
        runs::stop,
        runs::retry,
        runs::log,
        events::stream,
        workers::list,
        auth::session,
        queues::list,
        queues::pause,
        queues::resume,
        document,
    ),
    modifiers(&BearerAuth, &AuthResponses),
    tags(
        (name = "dags", description = "Register and show DAGs"),
        (name = "runs", description = "Submit, follow and stop runs; read step logs"),
        (name = "queues", description = "Queue and priority-level views; pause and resume"),
        (name = "workers", description = "The live workers"),
        (name = "health", description = "Probes for load balancers and Kubernetes"),
        (name = "meta", description = "This document"),
        (name = "access", description = "What the request's token may do"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the `bearerAuth` security scheme (HTTP bearer) that the operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token, sent as `Authorization: Bearer <token>` (see \
                         docs/operations.md, Access)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds 401 `unauthorized` and 403 `forbidden` (in `ErrorBody`) to every operation that names
/// `bearerAuth`, so that no handler has to repeat them.
struct AuthResponses;

impl Modify for AuthResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                if op.security.as_ref().is_none_or(|s| s.is_empty()) {
                    continue;
                }
                let responses = &mut op.responses.responses;
                responses.entry("401".into()).or_insert_with(|| {
                    error("No token, or one this coordinator does not know (`unauthorized`; with `WWW-Authenticate: Bearer`)").into()
                });
                responses.entry("403".into()).or_insert_with(|| {
                    error("The token may not do this: a read token on a write (`forbidden`)").into()
                });
            }
        }
    }
}

/// The document, built once.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document (JSON).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    summary = "This OpenAPI document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn document() -> impl IntoResponse {
    Json(&*DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::api::{router, AppState};
    use crate::store::Store;

    /// Routes that need no token (the probes); every other operation must name `bearerAuth`.
    const PUBLIC: &[&str] = &["/health/live", "/health/ready", "/metrics"];

    /// The HTTP methods axum's `MethodRouter` has a function for.
    const METHODS: &[&str] = &[
        "get", "post", "put", "delete", "patch", "head", "options", "trace", "connect",
    ];

    /// `(METHOD, path)` of every `.route("path", get(h).post(h)…)` in the source of
    /// [`super::super::router`], chains across lines included. Panics on what it cannot read
    /// (a path that is not a literal, `.nest`, `.merge`, `any(…)`…), so a new way of adding
    /// routes makes the coverage test fail rather than pass blind.
    fn router_routes(source: &str) -> BTreeSet<(String, String)> {
        let source = strip_line_comments(source);
        let start = source
            .find("fn router(")
            .expect("api/mod.rs has a `fn router(`");
        let body = &source[start..];
        let open = body.find('{').expect("router has a body");
        let body = &body[open..open + matching(&body[open..], '{', '}')];
        // The web UI's static files are merged in whole; they are not API operations.
        let body = body.replacen(".merge(ui::router())", "", 1);
        let body = body.as_str();
        for unsupported in [".nest(", ".nest_service(", ".merge(", ".route_service("] {
            assert!(
                !body.contains(unsupported),
                "router() uses `{unsupported}`: teach openapi.rs's router_routes to read it"
            );
        }
        let mut out = BTreeSet::new();
        let mut rest = body;
        while let Some(at) = rest.find(".route(") {
            let args_start = at + ".route".len();
            let len = matching(&rest[args_start..], '(', ')');
            let args = &rest[args_start + 1..args_start + len - 1];
            let args = args.trim_start();
            assert!(
                args.starts_with('"'),
                "a route path is not a string literal: `.route({args})`; write the path literally"
            );
            let close = args[1..].find('"').expect("path literal closes") + 1;
            let path = &args[1..close];
            let methods = methods_of(&args[close + 1..]);
            assert!(
                !methods.is_empty(),
                "cannot read the methods of route {path}: `{args}`; use get(…).post(…) style"
            );
            for m in methods {
                out.insert((m.to_ascii_uppercase(), path.to_string()));
            }
            rest = &rest[args_start + len..];
        }
        out
    }

    /// The source without `//` comments (outside string literals).
    fn strip_line_comments(source: &str) -> String {
        let mut out = String::with_capacity(source.len());
        for line in source.lines() {
            let mut in_str = false;
            let mut prev = ' ';
            let mut cut = line.len();
            for (i, c) in line.char_indices() {
                if c == '"' && prev != '\\' {
                    in_str = !in_str;
                } else if !in_str && c == '/' && prev == '/' {
                    cut = i - 1;
                    break;
                }
                prev = c;
            }
            out.push_str(&line[..cut]);
            out.push('\n');
        }
        out
    }

    /// Length of `s` up to and including the bracket that closes its first `open` (string
    /// literals skipped).
    fn matching(s: &str, open: char, close: char) -> usize {
        let mut depth = 0;
        let mut in_str = false;
        let mut prev = ' ';
        for (i, c) in s.char_indices() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str && c == open {
                depth += 1;
            } else if !in_str && c == close {
                depth -= 1;
                if depth == 0 {
                    return i + c.len_utf8();
                }
            }
            prev = c;
        }
        panic!("unbalanced `{open}` in {s}");
    }

    /// The method functions called at the top level of a method-router expression:
    /// `get(a::b).post(c)` → `["get", "post"]`. Panics on any other top-level call.
    fn methods_of(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut depth = 0;
        let mut ident = String::new();
        for c in expr.chars() {
            match c {
                '(' => {
                    if depth == 0 {
                        assert!(
                            METHODS.contains(&ident.as_str()),
                            "`{ident}(…)` in a route's method router; only {METHODS:?} are read"
                        );
                        out.push(ident.clone());
                    }
                    depth += 1;
                    ident.clear();
                }
                ')' => depth -= 1,
                c if depth == 0 && (c.is_alphanumeric() || c == '_') => ident.push(c),
                _ => ident.clear(),
            }
        }
        out
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if METHODS.contains(&method.as_str()) {
                    out.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn document_json() -> Value {
        serde_json::to_value(&*DOCUMENT).expect("the document serializes")
    }

    #[test]
    fn the_route_reader_reads_chains_across_lines() {
        let src = r#"
            fn other() { Router::new().route("/not/this", get(x)) }
            pub(crate) fn router(state: AppState) -> Router {
                Router::new()
                    // .route("/commented", get(a))
                    .route("/a/{id}", get(a::get).post(a::post))
                    .route(
                        "/b",
                        axum::routing::get(b::list)
                            .delete(b::gone),
                    )
                    .route_layer(x(y))
                    .with_state(state)
            }
        "#;
        let got: Vec<(String, String)> = router_routes(src).into_iter().collect();
        let want: Vec<(String, String)> = [
            ("DELETE", "/b"),
            ("GET", "/a/{id}"),
            ("GET", "/b"),
            ("POST", "/a/{id}"),
        ]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    /// The issue's test: every route of the router is in the document with the same method,
    /// and the document names no route the router lacks.
    #[test]
    fn the_document_covers_every_route() {
        let routes = router_routes(include_str!("mod.rs"));
        assert!(
            routes.len() >= 17,
            "the reader found too few routes: {routes:?}"
        );
        let documented = documented(&document_json());
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes of api::router() missing from the OpenAPI document: {missing:?}; annotate \
             their handlers with #[utoipa::path(…)] and list them in ApiDoc's paths(…) \
             (coordinator/src/api/openapi.rs)"
        );
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(
            extra.is_empty(),
            "the OpenAPI document names operations api::router() does not route: {extra:?}"
        );
    }

    /// Sends each documented operation (path parameters filled with `x`, POST bodies `{}`)
    /// through the real router, Redis unreachable: none may get axum's own 404 (no route) or
    /// 405 (wrong method). This checks the document against axum's routing table itself; the
    /// source reader above covers the other direction.
    #[tokio::test]
    async fn every_documented_operation_is_routed_by_axum() {
        let redis = dagrid_shared::Redis::open("redis://127.0.0.1:1", "openapi-test")
            .expect("the URL parses");
        let store = Arc::new(Store::new(redis, BTreeMap::new(), None));
        let state = AppState {
            store: store.clone(),
            draining: tokio_util::sync::CancellationToken::new(),
            started: std::time::Instant::now(),
            events: crate::events::Feed::new(store),
            keep_alive: super::events::KEEP_ALIVE,
        };
        let app = router(state, &crate::Auth::default());
        for (method, path) in documented(&document_json()) {
            let uri = fill_params(&path);
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("method"))
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            // Only a 404's body is read: a 200 of the event stream never ends.
            let body = if status == StatusCode::NOT_FOUND {
                axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default()
            } else {
                Default::default()
            };
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            // The router's fallback answers 404 `not_found`; handlers name what is missing
            // (`unknown_run`, …).
            let code =
                serde_json::from_slice::<Value>(&body).unwrap_or_default()["error"]["code"].clone();
            assert!(
                !(status == StatusCode::NOT_FOUND && code == "not_found"),
                "{method} {uri}: axum has no such route"
            );
        }
    }

    fn fill_params(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => in_param = true,
                '}' => {
                    in_param = false;
                    out.push('x');
                }
                c if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// Every `$ref` in `v`, with where it was found.
    fn refs<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a str)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "$ref" {
                        if let Value::String(r) = child {
                            out.push((at.to_string(), r));
                        }
                    } else {
                        refs(child, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    refs(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// The documented limits are in the schema, where clients and fuzzers read them.
    #[test]
    fn the_limits_are_in_the_schema() {
        let doc = document_json();
        let limit = doc["paths"]["/api/v1/runs"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("a limit parameter")
            .clone();
        assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
        assert_eq!(limit["schema"]["maximum"], 1000, "{limit}");
        let schemas = &doc["components"]["schemas"];
        let runs = &schemas["SubmitBatch"]["properties"]["runs"];
        assert_eq!(runs["maxItems"], 10_000, "{runs}");
        assert_eq!(runs["minItems"], 1, "{runs}");
        let ids = &schemas["Lookup"]["properties"]["ids"];
        assert_eq!(ids["maxItems"], 10_000, "{ids}");
        let children = &schemas["ChildRuns"]["properties"]["ids"];
        assert_eq!(children["maxItems"], 100, "{children}");
    }

    /// The issue's test: the served document parses, is OpenAPI 3.x, every `$ref` resolves, it
    /// deserializes into `oas3`'s typed OpenAPI 3.1 model, and its operations are complete
    /// (unique operationId, a tag, error responses in `ErrorBody`, the token scheme).
    #[tokio::test]
    async fn the_served_document_is_valid_openapi() {
        let response = document().await.into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "served as JSON"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body");
        let doc: Value = serde_json::from_slice(&bytes).expect("the document is JSON");

        let version = doc["openapi"].as_str().expect("`openapi` field");
        assert!(version.starts_with("3."), "openapi: {version}");
        assert_eq!(doc["info"]["title"], "dagrid");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

        let mut all = Vec::new();
        refs(&doc, "", &mut all);
        assert!(!all.is_empty(), "the document uses components");
        for (at, r) in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: non-local $ref {r}"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: $ref {r} does not resolve"
            );
        }

        let typed: oas3::Spec =
            serde_json::from_slice(&bytes).expect("the document is OpenAPI 3.1 (oas3::Spec)");
        assert!(typed.components.is_some());

        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"],
            serde_json::json!({
                "type": "http",
                "scheme": "bearer",
                "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
            })
        );
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let what = format!("{method} {path}");
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{what}: no tag"
                );
                let security = &op["security"];
                if PUBLIC.contains(&path.as_str()) {
                    assert!(security.is_null(), "{what} needs no token: {security}");
                } else {
                    for status in ["401", "403"] {
                        assert!(
                            op["responses"][status].is_object(),
                            "{what}: a secured operation lists {status}"
                        );
                    }
                    assert_eq!(
                        security,
                        &serde_json::json!([{ "bearerAuth": [] }]),
                        "{what}: name the token scheme with security((\"bearerAuth\" = []))"
                    );
                }
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{what}: no success response"
                );
                for (status, response) in responses {
                    let json_error = &response["content"]["application/json"]["schema"]["$ref"];
                    let error = status.starts_with('4') || status.starts_with('5');
                    // The probes answer 503 in their own shape (HealthStatus).
                    if error && !path.starts_with("/health") {
                        assert_eq!(
                            json_error, "#/components/schemas/ErrorBody",
                            "{what} {status}: errors are ErrorBody"
                        );
                    }
                }
            }
        }
    }
}
