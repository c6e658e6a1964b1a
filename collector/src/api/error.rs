//! API errors: one enum, mapped to a status and `{"error":{"code","message"}}` in one place.
//! Internal details (SQL, paths) are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("permission {0} required")]
    Forbidden(String),
    /// A cookie-authenticated mutation without the session's CSRF token, or one the
    /// browser marks as coming from another site.
    #[error("{0}")]
    Csrf(&'static str),
    /// A login session that must change its password or enrol a second factor first.
    #[error("{}", .0.message())]
    Restricted(crate::auth::restriction::Restriction),
    /// The password was right, but the account signs in with a second factor too.
    #[error("this account signs in with a second factor: send `totp` with a code from its authenticator app, or a recovery code")]
    SecondFactorRequired,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// The request fits the document, but its content is refused (a matcher or selector
    /// that does not parse or can never match, a regex that does not compile, a rule the
    /// engine cannot run...): 422, so 400 always means "does not fit the document".
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; try again later")]
    TooManyRequests,
    /// A configured cap on what may exist at once (active silences...) is reached.
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `forbidden`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::SecondFactorRequired => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Csrf(_) | ApiError::Restricted(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests | ApiError::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf(_) => "csrf",
            ApiError::Restricted(r) => r.code(),
            ApiError::SecondFactorRequired => "mfa_required",
            ApiError::NotFound => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unprocessable(_) => "invalid",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyRequests => "too_many_requests",
            ApiError::LimitReached(_) => "limit_reached",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::GatewayTimeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(msg.into())
    }

    pub fn unprocessable(msg: impl Into<String>) -> ApiError {
        ApiError::Unprocessable(msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid(m) => ApiError::Unprocessable(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Limit(m) => ApiError::LimitReached(m),
            StoreError::Closed | StoreError::Aborted(_) => {
                ApiError::Unavailable("the store is busy or shutting down; retry".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "api internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

/// A JSON error for rejections outside handlers (bad JSON, bad query, body too large).
pub fn plain(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    (status, Json(body)).into_response()
}
