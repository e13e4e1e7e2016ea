//! Every error the API answers: a status code and a JSON body that says why.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// `{"error": "<code>", "reason": "<what was wrong, in words>"}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short and stable, for programs: `not_found`, `bad_request`, ...
    pub code: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            reason: reason.into(),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            reason: reason.into(),
        }
    }

    pub fn method_not_allowed(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "reason": self.reason });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A JSON body with 200 OK (serialising our own types cannot fail; if it ever did,
/// the client gets a 500 that says so rather than a dropped connection).
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    json_with(StatusCode::OK, value)
}

pub fn json_with<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            reason: format!("encoding the answer: {e}"),
        }
        .into_response(),
    }
}
