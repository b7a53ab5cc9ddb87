//! The API's one error type and its JSON shape: `{"error": {"code", "message", "details"?}}`.
//! Internal details (Redis errors) are logged, never sent.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dagrid_shared::dag::{DagError, DagErrors};
use dagrid_shared::ConnError;
use serde::Serialize;

use crate::store::StoreError;

/// Declares [`ErrorCode`]: each variant with its stable text and its HTTP status.
macro_rules! error_codes {
    ($($variant:ident = $text:literal, $status:ident;)*) => {
        /// The stable machine code of an API error, with the HTTP status it answers; the
        /// OpenAPI annotations of each operation list the codes it may answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum ErrorCode {
            $(
                #[doc = concat!("`", $text, "` (", stringify!($status), ")")]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code.
            #[cfg(test)]
            const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            /// The code as sent in `error.code`.
            pub(crate) const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The HTTP status of an error with this code.
            pub(crate) const fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    BadBody = "bad_body", BAD_REQUEST;
    BadPath = "bad_path", BAD_REQUEST;
    BadQuery = "bad_query", BAD_REQUEST;
    BadRequest = "bad_request", BAD_REQUEST;
    BatchTooLarge = "batch_too_large", BAD_REQUEST;
    BodyReadFailed = "body_read_failed", BAD_REQUEST;
    EmptyBatch = "empty_batch", BAD_REQUEST;
    EmptyBody = "empty_body", BAD_REQUEST;
    InvalidIdempotencyKey = "invalid_idempotency_key", BAD_REQUEST;
    InvalidUtf8 = "invalid_utf8", BAD_REQUEST;
    MalformedJson = "malformed_json", BAD_REQUEST;
    TooManyIds = "too_many_ids", BAD_REQUEST;
    Unauthorized = "unauthorized", UNAUTHORIZED;
    Forbidden = "forbidden", FORBIDDEN;
    LogNotReachable = "log_not_reachable", NOT_FOUND;
    NoLog = "no_log", NOT_FOUND;
    NoLogYet = "no_log_yet", NOT_FOUND;
    NotFound = "not_found", NOT_FOUND;
    UnknownAsset = "unknown_asset", NOT_FOUND;
    UnknownAttempt = "unknown_attempt", NOT_FOUND;
    UnknownDag = "unknown_dag", NOT_FOUND;
    UnknownRun = "unknown_run", NOT_FOUND;
    UnknownStep = "unknown_step", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    Conflict = "conflict", CONFLICT;
    DependencyNotSucceeded = "dependency_not_succeeded", CONFLICT;
    NothingToRetry = "nothing_to_retry", CONFLICT;
    RunActive = "run_active", CONFLICT;
    RunFinished = "run_finished", CONFLICT;
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE;
    DagTooLarge = "dag_too_large", PAYLOAD_TOO_LARGE;
    JsonContentTypeRequired = "json_content_type_required", UNSUPPORTED_MEDIA_TYPE;
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    IdempotencyKeyReused = "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    InvalidBody = "invalid_body", UNPROCESSABLE_ENTITY;
    InvalidDag = "invalid_dag", UNPROCESSABLE_ENTITY;
    InvalidParams = "invalid_params", UNPROCESSABLE_ENTITY;
    InvalidQueue = "invalid_queue", UNPROCESSABLE_ENTITY;
    InvalidRequest = "invalid_request", UNPROCESSABLE_ENTITY;
    InvalidRetry = "invalid_retry", UNPROCESSABLE_ENTITY;
    InvalidSubmit = "invalid_submit", UNPROCESSABLE_ENTITY;
    TooManyStreams = "too_many_streams", TOO_MANY_REQUESTS;
    HeadersTooLarge = "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    Internal = "internal", INTERNAL_SERVER_ERROR;
    Draining = "draining", SERVICE_UNAVAILABLE;
    Overloaded = "overloaded", SERVICE_UNAVAILABLE;
    RedisUnavailable = "redis_unavailable", SERVICE_UNAVAILABLE;
    Unavailable = "unavailable", SERVICE_UNAVAILABLE;
}

/// An API failure: an HTTP status, a stable machine code and a message for people.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Vec<DagError>,
}

/// The body of every error response: `{"error": {"code", "message", "details"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// Stable machine code in snake_case (`unknown_dag`, `invalid_params`, `draining`, …).
    #[schema(example = "unknown_run")]
    code: &'a str,
    /// What went wrong and what to do about it, for people.
    message: &'a str,
    /// One entry per problem (422 for an invalid DAG or params only); absent when empty.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<DagError>, required = false)]
    details: &'a [DagError],
}

impl ApiError {
    /// An error answered with `code`'s status.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(code.status(), code, message)
    }

    /// An error answered with `status` (for a response rewritten into the error shape, which
    /// keeps the status it had).
    pub(crate) fn with_status(
        status: StatusCode,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 422: a DAG file or params that parse but are invalid; each problem in `details`, its
    /// field prefixed with `prefix` (for example `runs[3].`).
    pub(crate) fn invalid(code: ErrorCode, errors: DagErrors, prefix: &str) -> Self {
        let details: Vec<DagError> = errors
            .0
            .into_iter()
            .map(|e| DagError {
                field: format!("{prefix}{}", e.field),
                message: e.message,
            })
            .collect();
        let message = details
            .iter()
            .map(|e| {
                if e.field.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            details,
        }
    }
}

impl From<ConnError> for ApiError {
    fn from(e: ConnError) -> Self {
        tracing::error!(cause = %e, "Redis request failed");
        Self::new(
            ErrorCode::RedisUnavailable,
            "the coordinator cannot reach Redis right now; retry shortly",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => e.into(),
            StoreError::Conflict { .. } => {
                tracing::warn!(cause = %e, "compare-and-set lost too often");
                Self::new(ErrorCode::Conflict, e.to_string())
            }
            StoreError::NotFound { run } => Self::new(
                ErrorCode::UnknownRun,
                format!("no run with id \"{run}\"; list runs with GET /api/v1/runs"),
            ),
            StoreError::Corrupt(_) => {
                tracing::error!(cause = %e, "stored data is corrupt");
                Self::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidBody)
            }
            JsonRejection::JsonSyntaxError(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::MalformedJson)
            }
            JsonRejection::MissingJsonContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::JsonContentTypeRequired,
            ),
            // Too large (413), or the body could not be read (the body read timeout).
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge)
            }
            JsonRejection::BytesRejection(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BodyReadFailed)
            }
            _ => (StatusCode::BAD_REQUEST, ErrorCode::BadBody),
        };
        let mut message = r.body_text();
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            message.push_str("; send the header Content-Type: application/json");
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            message.push_str(&format!(
                "; a request body is at most {} bytes (32 MiB): split the batch",
                super::state::MAX_BODY_BYTES
            ));
        }
        Self::with_status(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
                details: &self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// `axum::Json`, with rejections in the API's error shape.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct AppJson<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_are_distinct_snake_case_with_an_error_status() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{text}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{text}"
            );
        }
    }
}
