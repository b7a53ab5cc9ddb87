//! The API's edge: what answers before (or instead of) a handler, always in the error shape
//! `{"error": {"code", "message"}}`.
//!
//! - [`not_found`] and [`method_not_allowed`]: the router's fallbacks (404 `not_found`, 405
//!   `method_not_allowed` with `Allow`);
//! - [`limit_headers`]: more than [`MAX_HEADERS`] headers or [`MAX_HEADER_BYTES`] bytes of
//!   them get 431 `headers_too_large` (hyper itself only answers, with no body, beyond
//!   [`HYPER_MAX_HEADERS`] headers or 128 KiB, `crate::http`);
//! - [`error_shape`]: any other error response that is not JSON (axum's rejections of a path,
//!   a query, a body that is not UTF-8 or too large) is rewritten into the shape, its text as
//!   the message;
//! - [`probes_only`]: the service of connections beyond the connection cap (see
//!   [`crate::http`]): the probes, else 503 `overloaded`.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::error::ApiError;
use super::error::ErrorCode;

/// Most request headers the API reads; more get 431.
pub(crate) const MAX_HEADERS: usize = 100;
/// Most bytes of request headers (names and values) the API reads; more get 431.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most request headers hyper parses (more: a 431 without a body, before the API sees it).
pub(crate) const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;
/// Most bytes of a non-JSON error body that [`error_shape`] reads into the message.
const MAX_REWRITTEN_BYTES: usize = 16 * 1024;
/// The paths served on connections of the probe reserve.
const PROBES: &[&str] = &["/health/live", "/health/ready", "/metrics"];

/// Router fallback: 404 `not_found` naming the path.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route {method} {}; the routes are listed at GET /api/v1/openapi.json",
            uri.path()
        ),
    )
}

/// Method fallback: 405 `method_not_allowed` (axum adds the `Allow` header).
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} does not take {method}; the Allow header lists the methods it takes",
            uri.path()
        ),
    )
}

/// Middleware: 431 `headers_too_large` for more than [`MAX_HEADERS`] headers or
/// [`MAX_HEADER_BYTES`] bytes of them.
pub(crate) async fn limit_headers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(ErrorCode::HeadersTooLarge, format!(
                "the request has {} headers of {bytes} bytes; send at most {MAX_HEADERS} headers of at most {MAX_HEADER_BYTES} bytes in all",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Middleware: rewrites an error response (4xx, 5xx) that is not JSON into the error shape,
/// keeping its status and headers; its text becomes the message.
pub(crate) async fn error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRITTEN_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = describe(status, text);
    let rewritten = ApiError::with_status(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, rewritten.into_body())
}

/// The code and message of an error response of `status` whose body was `text` (axum's
/// rejection texts start with what failed).
fn describe(status: StatusCode, text: String) -> (ErrorCode, String) {
    let code = match status {
        StatusCode::BAD_REQUEST if text.starts_with("Failed to deserialize query") => {
            ErrorCode::BadQuery
        }
        StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") => ErrorCode::BadPath,
        StatusCode::BAD_REQUEST if text.starts_with("Failed to buffer") => {
            ErrorCode::BodyReadFailed
        }
        StatusCode::BAD_REQUEST if text.contains("UTF-8") => ErrorCode::InvalidUtf8,
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRequest,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    (code, message)
}

/// `app` for a connection of the probe reserve: the probes as usual, anything else 503
/// `overloaded` with `Retry-After: 1`.
pub(crate) fn probes_only(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(only_probes))
}

async fn only_probes(request: Request, next: Next) -> Response {
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    (
        [(header::RETRY_AFTER, "1")],
        ApiError::new(ErrorCode::Overloaded, "the coordinator serves as many connections as it may (--max-connections); retry shortly",
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_texts_get_codes() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            describe(
                bad,
                "Failed to deserialize query string: duplicate field `limit`".into()
            )
            .0
            .as_str(),
            "bad_query"
        );
        assert_eq!(
            describe(bad, "Invalid URL: x".into()).0.as_str(),
            "bad_path"
        );
        assert_eq!(
            describe(StatusCode::PAYLOAD_TOO_LARGE, String::new()),
            (ErrorCode::BodyTooLarge, "Payload Too Large".to_string())
        );
    }
}
