//! The web UI: static files (HTML, ES modules, CSS, the vendored dagre layout library) embedded
//! in the binary at build time and served at `/` and `/ui/…` without a token, since they hold
//! no data. The pages read and act only through the token-protected `/api/v1` routes, sending
//! the token the user typed as `Authorization: Bearer` from the tab's `sessionStorage`; see
//! docs/operations.md ("Web UI") for the access rules.

use super::error::ErrorCode;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of `coordinator/ui/`, embedded with `include_str!`.
const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/app.js"),
    },
    Asset {
        path: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/api.js"),
    },
    Asset {
        path: "graph.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/graph.js"),
    },
    Asset {
        path: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../ui/style.css"),
    },
    Asset {
        path: "vendor/dagre.esm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../ui/vendor/dagre.esm.js"),
    },
    Asset {
        path: "vendor/dagre.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_str!("../../ui/vendor/dagre.LICENSE"),
    },
];

/// The page every UI route starts from.
const INDEX: &str = include_str!("../../ui/index.html");

/// Content-Security-Policy of every UI response: scripts, styles and connections to this
/// origin only (no inline script, nothing fetched from elsewhere), and no framing (against
/// clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The UI's routes: `GET /` (and `/ui`, `/ui/`) the page, `GET /ui/{*file}` its assets; 404
/// for any other file. Mounted outside the token layer by [`super::router`].
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*file}", get(asset))
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == file) {
        Some(a) => respond(a.content_type, a.body),
        None => super::error::ApiError::new(
            ErrorCode::UnknownAsset,
            format!("the UI has no file {file:?}; open / for the UI"),
        )
        .into_response(),
    }
}

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate every time: a new binary serves new files under the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let mut sources: Vec<&str> = ASSETS.iter().map(|a| a.body).collect();
        sources.push(INDEX);
        for src in sources {
            for (i, _) in src.match_indices("/ui/") {
                let rest = &src[i + 4..];
                let end = rest.find(['"', '\'', ')']).unwrap_or(rest.len());
                let file = &rest[..end];
                if file.is_empty() || file.contains(' ') || file.contains('$') {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.path == file),
                    "/ui/{file} is referenced but not embedded in ASSETS"
                );
            }
        }
    }
}
