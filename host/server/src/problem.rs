//! Errors as RFC 9457 `application/problem+json`, each kind with a stable `type` a client can match on.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The prefix of every problem `type`.
pub const TYPE_BASE: &str = "https://corral.dev/problems/";

/// One kind of failure the API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unauthorized,
    NotFound,
    /// The request asks for more than the tenant's ceiling.
    Forbidden,
    InvalidRequest,
    InvalidWorkflow,
    InvalidAgent,
    Conflict,
    QuotaExceeded,
    TooLarge,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not-found",
            Kind::Forbidden => "above-ceiling",
            Kind::InvalidRequest => "invalid-request",
            Kind::InvalidWorkflow => "invalid-workflow",
            Kind::InvalidAgent => "invalid-agent",
            Kind::Conflict => "conflict",
            Kind::QuotaExceeded => "quota-exceeded",
            Kind::TooLarge => "too-large",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::InvalidRequest => StatusCode::BAD_REQUEST,
            Kind::InvalidWorkflow | Kind::InvalidAgent => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Unauthorized => "missing or unknown API token",
            Kind::NotFound => "no such resource",
            Kind::Forbidden => "the request asks for more than the tenant may have",
            Kind::InvalidRequest => "the request is malformed",
            Kind::InvalidWorkflow => "the workflow does not validate",
            Kind::InvalidAgent => "the component is not a usable agent",
            Kind::Conflict => "the resource is not in a state that allows this",
            Kind::QuotaExceeded => "a quota is spent",
            Kind::TooLarge => "the request body is too large",
            Kind::Unavailable => "the server is not taking this request now",
            Kind::Internal => "the server failed",
        }
    }
}

/// A problem document, plus the headers some kinds carry.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub detail: String,
    /// Members beside the standard ones (`errors`, `quota`, `run`, ...).
    pub extra: serde_json::Map<String, Value>,
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    ty: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            extra: serde_json::Map::new(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The same document as another kind (a spent upload quota is a 413).
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// What another tenant's resource, or a missing one, answers: the same
    /// either way, so ids do not leak.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(Kind::NotFound, format!("no {what} `{id}`"))
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(Kind::Internal, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            ty: format!("{TYPE_BASE}{}", self.kind.slug()),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            extra: &self.extra,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.kind.status(), json).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client that waits this long finds room.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.kind == Kind::Unauthorized {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"corral\""),
            );
        }
        res
    }
}

impl From<corral_store::StoreError> for Problem {
    fn from(e: corral_store::StoreError) -> Self {
        use corral_store::StoreError as E;
        match &e {
            E::UnknownRun(id) => Problem::not_found("run", id),
            E::Busy { .. } => {
                Problem::new(Kind::Unavailable, e.to_string()).retry_after(Duration::from_secs(1))
            }
            E::Leased { .. } | E::Step { .. } | E::RunExists(_) | E::SameRequest { .. } => {
                Problem::new(Kind::Conflict, e.to_string())
            }
            _ => {
                tracing::error!(error = %e, "store failure");
                Problem::internal(e)
            }
        }
    }
}
