//! The API's one error type and its JSON shape: `{"error": {"code", "message", "details"?}}`.
//! Internal details (Redis errors) are logged, never sent.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dagrid_shared::conn::ConnError;
use dagrid_shared::dag::{DagError, DagErrors};
use serde::Serialize;

use crate::store::StoreError;

/// An API failure: an HTTP status, a stable machine code and a message for people.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
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
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400: the request cannot be understood.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: what the request names does not exist.
    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422: a DAG file or params that parse but are invalid; each problem in `details`, its
    /// field prefixed with `prefix` (for example `runs[3].`).
    pub(crate) fn invalid(code: &'static str, errors: DagErrors, prefix: &str) -> Self {
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
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
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
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            StoreError::NotFound { run } => Self::not_found(
                "unknown_run",
                format!("no run with id \"{run}\"; list runs with GET /api/v1/runs"),
            ),
            StoreError::Corrupt(_) => {
                tracing::error!(cause = %e, "stored data is corrupt");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::MissingJsonContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "json_content_type_required",
            ),
            // Too large (413), or the body could not be read (the body read timeout).
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            JsonRejection::BytesRejection(_) => (StatusCode::BAD_REQUEST, "body_read_failed"),
            _ => (StatusCode::BAD_REQUEST, "bad_body"),
        };
        let mut message = r.body_text();
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            message.push_str("; send the header Content-Type: application/json");
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            message.push_str(&format!(
                "; a request body is at most {} bytes (32 MiB): split the batch",
                super::MAX_BODY_BYTES
            ));
        }
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
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
