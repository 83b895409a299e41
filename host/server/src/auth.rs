//! Authentication: a bearer token on every `/v1` request names exactly one tenant, or the request ends with 401.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::problem::{Kind, Problem};
use crate::state::AppState;
use crate::tenant::Tenant;

/// The tenant a request is made for.
pub struct Caller(pub Arc<Tenant>);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Problem::new(
                Kind::Unauthorized,
                "no `Authorization: Bearer <token>` header",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::new(
                    Kind::Unauthorized,
                    "the `Authorization` header is not of the form `Bearer <token>`",
                )
            })?;
        state
            .tenants
            .by_token(token)
            .map(Caller)
            .ok_or_else(|| Problem::new(Kind::Unauthorized, "the token belongs to no tenant"))
    }
}
