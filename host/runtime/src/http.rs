//! Outbound HTTP for agents (contract 0.2.0): `wasi:http` requests allowed by grants, checked again at connect time, counted against per-call quotas and recorded in the receipt.

mod address;
mod body;
mod grant;
mod hooks;
mod record;
mod send;

pub use address::internal_range;
pub use grant::{HttpGrant, Target};
pub(crate) use hooks::{HttpPolicy, HttpQuota};
pub(crate) use record::HttpLog;
pub use record::{HttpCallRecord, HttpOutcome, MAX_HTTP_RECORDS};
