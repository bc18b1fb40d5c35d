//! Every API error is JSON: `{"error": CODE, "reason": TEXT}` with the matching status.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::registry::RegistryError;
use crate::runtime::LoadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError { status, code, reason: reason.into() }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.code, "reason": self.reason}));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer realm=\"routewatch\"")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> ApiError {
        let reason = err.to_string();
        match err {
            RegistryError::NotFound(_) => ApiError::not_found(reason),
            RegistryError::InvalidConfig { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", reason)
            }
            RegistryError::Conflict { .. } | RegistryError::NameInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", reason)
            }
            RegistryError::Classifier(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_component", reason)
            }
            RegistryError::Signature(_) => ApiError::new(StatusCode::FORBIDDEN, "signature", reason),
            RegistryError::Load(LoadError::Read { .. } | LoadError::Cache(_)) | RegistryError::Io(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
            }
            RegistryError::Load(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_component", reason),
        }
    }
}
