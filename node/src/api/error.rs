//! How engine errors and bad requests become HTTP responses: a status code
//! and an [`ApiErrorBody`] saying why.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::ApiErrorBody;
use crate::engine::EngineError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400: the request cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: a write without the right token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            EngineError::NotAWriter(_) => (StatusCode::FORBIDDEN, "not_a_writer"),
            EngineError::Damaged { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "damaged"),
            EngineError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            EngineError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            EngineError::NoNetwork => (StatusCode::CONFLICT, "no_network"),
            EngineError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, error = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code, error = %self.message, "request refused");
        }
        (self.status, Json(ApiErrorBody { code: self.code.to_owned(), error: self.message })).into_response()
    }
}
