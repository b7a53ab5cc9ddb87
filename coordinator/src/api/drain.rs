//! Draining at shutdown: once the coordinator's shutdown token is cancelled, every request that
//! writes (creates runs, registers DAGs, pauses or resumes queues, and any write route added
//! later) gets 503 `draining` with a `Retry-After` header, in the API's error shape; reads go on.
//!
//! axum stops accepting connections when shutdown starts, but a request whose first bytes had
//! arrived on a connection accepted before is still read and served (then the connection
//! closes); requests are checked here once their head is read, not when the connection was
//! accepted, so those get the 503 too. A request that passed this check before shutdown
//! finishes normally. Clients retry after
//! `Retry-After`, reaching another replica (this one's readiness is 503 already) or this one
//! once restarted.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::error::ErrorCode;

/// Seconds a client should wait before retrying a write refused while draining (the
/// `Retry-After` value): long enough for a load balancer to stop routing to this replica, or
/// for a restarted coordinator to be up.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// Routes that use POST to read: they go on while draining.
const READ_ONLY_POSTS: &[&str] = &["/api/v1/runs/lookup"];

/// Middleware: refuses writes with 503 and `Retry-After` once `draining` is cancelled; passes
/// everything else through.
pub(crate) async fn refuse_writes_while_draining(
    State(draining): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    if draining.is_cancelled() && is_write(request.method(), request.uri().path()) {
        return refusal();
    }
    next.run(request).await
}

/// True for a request that writes: any method but GET, HEAD and OPTIONS, except the POST
/// routes that only read. Also what a read-only API token may not do ([`super::auth`]).
pub(super) fn is_write(method: &Method, path: &str) -> bool {
    !(matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (method == Method::POST && READ_ONLY_POSTS.contains(&path)))
}

/// 503 `draining`, `Retry-After: 5`.
fn refusal() -> Response {
    (
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        ApiError::new(ErrorCode::Draining, format!(
                "this coordinator is shutting down and takes no new work; retry in {RETRY_AFTER_SECS} s"
            ),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use axum::Router;
    use std::future::IntoFuture;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a tiny app behind the middleware on port 0 and sends one request per call.
    struct App {
        addr: std::net::SocketAddr,
        stop: CancellationToken,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl App {
        async fn start(draining: CancellationToken) -> Self {
            let app = Router::new()
                .route(
                    "/api/v1/runs",
                    get(|| async { "list" }).post(|| async { "made" }),
                )
                .route("/api/v1/runs/lookup", post(|| async { "looked up" }))
                .route_layer(axum::middleware::from_fn_with_state(
                    draining,
                    refuse_writes_while_draining,
                ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = CancellationToken::new();
            let served = tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.clone().cancelled_owned())
                    .into_future(),
            );
            Self { addr, stop, served }
        }

        /// Returns the status line and headers, and the body.
        async fn call(&self, method: &str, path: &str) -> (String, String) {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            (head.to_ascii_lowercase(), body.to_string())
        }

        async fn stop(self) {
            self.stop.cancel();
            self.served.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn draining_refuses_writes_with_retry_after_and_the_error_shape() {
        let draining = CancellationToken::new();
        let app = App::start(draining.clone()).await;
        let (head, body) = app.call("POST", "/api/v1/runs").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "made");

        draining.cancel();
        let (head, body) = app.call("POST", "/api/v1/runs").await;
        assert!(head.starts_with("http/1.1 503"), "{head}");
        assert!(head.contains("\r\nretry-after: 5"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "draining", "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry in 5 s"));

        let (head, _) = app.call("GET", "/api/v1/runs").await;
        assert!(head.starts_with("http/1.1 200"), "reads go on: {head}");
        let (head, _) = app.call("POST", "/api/v1/runs/lookup").await;
        assert!(head.starts_with("http/1.1 200"), "lookups go on: {head}");
        app.stop().await;
    }
}
