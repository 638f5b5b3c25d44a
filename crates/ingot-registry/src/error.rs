//! Errors in the distribution spec's JSON format, each with its code and
//! HTTP status; and the client's errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A spec error as the server sends it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn blob_unknown(d: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {d} is unknown to this repository"),
        )
    }
    pub fn upload_unknown(u: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            format!("upload {u} is unknown"),
        )
    }
    pub fn digest_invalid(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", m)
    }
    pub fn manifest_unknown(r: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {r} is unknown to this repository"),
        )
    }
    pub fn manifest_invalid(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m)
    }
    pub fn name_invalid(n: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {n:?}"),
        )
    }
    pub fn name_unknown(n: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {n} is unknown"),
        )
    }
    pub fn unsupported(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", m)
    }
    /// A failure inside the registry: logged in full, answered without
    /// detail (its text may name host paths).
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(%e, "registry internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal error (the registry's log has the detail)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        (self.status, [("content-type", "application/json")], body.to_string()).into_response()
    }
}

/// What the client reports.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] ingot_store::StoreError),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
}
