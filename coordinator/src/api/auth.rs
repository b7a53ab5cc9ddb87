//! API tokens: every request carries `Authorization: Bearer <token>` once at least one token
//! is configured ([`crate::Auth`]); without any token configured the API is open (the
//! coordinator then listens on loopback only unless told otherwise, see [`crate::serve`]).
//!
//! Rules, in order:
//! - `/health/live` and `/health/ready` are always public (load balancers and probes), and so
//!   are the web UI's static files (`/`, `/ui`, `/ui/…`: they hold no data);
//! - `/metrics` is public when [`crate::Auth::public_metrics`] (the default), `/health` when
//!   [`crate::Auth::public_health`] (not the default);
//! - anything else (every `/api/v1/…` route, any route added later, unknown paths) needs a
//!   known token: none or an unknown one gets 401 `unauthorized` with `WWW-Authenticate:
//!   Bearer`;
//! - a `read` token may only read: a request that writes (as [`super::drain::is_write`]
//!   classifies it, the same rule that refuses writes while draining) gets 403 `forbidden`.
//!
//! Tokens are compared as SHA-256 digests, in constant time over every configured token, and
//! never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::drain::is_write;
use super::error::ApiError;
use super::error::ErrorCode;
use crate::{Auth, Role};

/// Paths that never need a token: liveness and readiness probes.
const ALWAYS_PUBLIC: &[&str] = &["/health/live", "/health/ready"];
/// The Prometheus scrape path, public unless `public_metrics` is off.
const METRICS: &str = "/metrics";
/// The detailed cluster view, public only with `public_health`.
const HEALTH: &str = "/health";

/// One token as the middleware keeps it: its name (for logs), role and SHA-256 digest.
#[derive(Debug)]
struct Known {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// What the middleware checks requests against, built once at startup.
#[derive(Debug)]
pub(crate) struct Guard {
    tokens: Vec<Known>,
    public_metrics: bool,
    public_health: bool,
}

impl Guard {
    /// The guard of `auth`: the tokens' digests (the secrets themselves are not kept).
    pub(crate) fn new(auth: &Auth) -> Arc<Self> {
        Arc::new(Self {
            tokens: auth
                .tokens
                .iter()
                .map(|t| Known {
                    name: t.name.clone(),
                    role: t.role,
                    digest: digest(t.secret()),
                })
                .collect(),
            public_metrics: auth.public_metrics,
            public_health: auth.public_health,
        })
    }

    /// The known token equal to `presented`, if any. Every configured token is compared (in
    /// constant time), so the time taken says nothing about which one nearly matched.
    fn find(&self, presented: &str) -> Option<&Known> {
        let d = digest(presented);
        let mut found = None;
        for known in &self.tokens {
            if bool::from(known.digest.ct_eq(&d)) {
                found = Some(known);
            }
        }
        found
    }

    fn is_public(&self, path: &str) -> bool {
        ALWAYS_PUBLIC.contains(&path)
            || path == "/"
            || path == "/ui"
            || path.starts_with("/ui/")
            || (path == METRICS && self.public_metrics)
            || (path == HEALTH && self.public_health)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, as RFC 6750 allows),
/// or `None` when the header is missing or not a bearer token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who made a request, for per-caller limits (the event streams): the name of its token, put
/// in the request's extensions by [`require_token`]; absent without tokens or on a public
/// path.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) String);

/// Middleware: lets a request through when no token is configured, its path is public, or it
/// carries a known token whose role allows it; else answers 401 or 403 in the API's error
/// shape.
pub(crate) async fn require_token(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    if guard.tokens.is_empty() || guard.is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(presented) = bearer(request.headers()) else {
        return unauthorized(
            "this API needs a token: pass --token (or set DAGRID_TOKEN) with the dagrid CLI, or send the header `Authorization: Bearer <token>`",
        );
    };
    let Some(known) = guard.find(presented) else {
        tracing::info!(
            method = %request.method(),
            path = request.uri().path(),
            "API request with an unknown token refused"
        );
        return unauthorized(
            "the token is not one this coordinator knows; check --token (DAGRID_TOKEN) or the `Authorization: Bearer <token>` header",
        );
    };
    if known.role == Role::Read && is_write(request.method(), request.uri().path()) {
        tracing::info!(
            token = %known.name,
            method = %request.method(),
            path = request.uri().path(),
            "write refused to a read-only token"
        );
        return ApiError::new(ErrorCode::Forbidden, format!(
                "the token {:?} is read-only; {} {} changes state and needs a token with role admin",
                known.name,
                request.method(),
                request.uri().path()
            ),
        )
        .into_response();
    }
    let caller = Caller(known.name.clone());
    let mut request = request;
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(known.role);
    next.run(request).await
}

/// Body of `GET /api/v1/session`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// `admin` or `read`: what the token may do (`admin` when the API has no tokens).
    role: &'static str,
    /// The token's name (`name` of its configuration entry); null when the API has no tokens.
    name: Option<String>,
    /// Whether the API needs tokens at all.
    auth: bool,
}

/// `GET /api/v1/session`: the role and name of the token the request carries, so that a
/// client (the web UI) shows action buttons only to admin tokens. Without configured tokens
/// every caller is an admin (`"auth": false`).
#[utoipa::path(
    get,
    path = "/api/v1/session",
    operation_id = "session",
    tag = "access",
    summary = "The role of the token of this request",
    responses(
        (status = 200, description = "The token's role and name", body = Session),
        (status = 401, description = "No token or an unknown one (`unauthorized`)", body = super::error::ErrorBody),
    ),
    security(("bearerAuth" = [])),
)]
pub(crate) async fn session(
    caller: Option<axum::extract::Extension<Caller>>,
    role: Option<axum::extract::Extension<Role>>,
) -> axum::Json<Session> {
    axum::Json(match (caller, role) {
        (Some(axum::extract::Extension(Caller(name))), Some(axum::extract::Extension(role))) => {
            Session {
                role: role.as_str(),
                name: Some(name),
                auth: true,
            }
        }
        _ => Session {
            role: Role::Admin.as_str(),
            name: None,
            auth: false,
        },
    })
}

/// 401 `unauthorized` with `WWW-Authenticate: Bearer`.
fn unauthorized(message: &str) -> Response {
    (
        [(header::WWW_AUTHENTICATE, r#"Bearer realm="dagrid""#)],
        ApiError::new(ErrorCode::Unauthorized, message),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiToken;
    use axum::http::HeaderValue;

    fn guard() -> Arc<Guard> {
        Guard::new(&Auth {
            tokens: vec![
                ApiToken::new("ops", Role::Admin, "admin-secret"),
                ApiToken::new("dash", Role::Read, "read-secret"),
            ],
            public_metrics: true,
            public_health: false,
            insecure_no_auth: false,
        })
    }

    #[test]
    fn tokens_are_found_by_value_and_role() {
        let g = guard();
        assert_eq!(g.find("admin-secret").map(|k| k.role), Some(Role::Admin));
        assert_eq!(g.find("read-secret").map(|k| k.name.as_str()), Some("dash"));
        assert!(g.find("admin-secre").is_none());
        assert!(g.find("").is_none());
    }

    #[test]
    fn probes_and_metrics_are_public_the_health_view_is_not() {
        let g = guard();
        assert!(g.is_public("/health/live"));
        assert!(g.is_public("/health/ready"));
        assert!(g.is_public("/metrics"));
        assert!(!g.is_public("/health"));
        assert!(!g.is_public("/api/v1/runs"));
        assert!(!g.is_public("/metrics/"));
        assert!(g.is_public("/") && g.is_public("/ui/app.js"));
        assert!(!g.is_public("/uix") && !g.is_public("/api/v1/ui/x"));
    }

    #[test]
    fn only_bearer_headers_carry_a_token() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let t = ApiToken::new("ops", Role::Admin, "admin-secret");
        assert!(!format!("{t:?}").contains("admin-secret"));
        assert!(!format!("{:?}", guard()).contains("admin-secret"));
    }
}
