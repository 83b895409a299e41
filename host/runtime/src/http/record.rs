//! What the receipt says of each outbound request: method, where, status, bytes, time and outcome; and the running totals the quotas are checked against.

use serde::{Deserialize, Serialize};

/// How an outbound request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpOutcome {
    /// A response came back (whatever its status).
    Ok,
    /// No grant allows it; never sent.
    Denied,
    /// The host resolved to an address on the host's own network that no
    /// grant names; never sent.
    Blocked,
    /// A per-call quota (requests, request or response bytes) ran out.
    OverQuota,
    /// Sent, or tried, and failed: DNS, connect, TLS, protocol or deadline.
    Failed,
}

impl std::fmt::Display for HttpOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpOutcome::Ok => "ok",
            HttpOutcome::Denied => "denied",
            HttpOutcome::Blocked => "blocked",
            HttpOutcome::OverQuota => "over quota",
            HttpOutcome::Failed => "failed",
        })
    }
}

/// One outbound request, as the receipt records it. The query string is
/// left out: it often carries keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCallRecord {
    pub method: String,
    /// `scheme://host:port`.
    pub origin: String,
    pub path: String,
    /// The response's status, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes sent.
    pub bytes_out: u64,
    /// Response body bytes the agent read.
    pub bytes_in: u64,
    /// From the request to the response's head.
    pub latency_us: u64,
    pub outcome: HttpOutcome,
    /// Why it was denied, blocked or failed, and for a denial the grant
    /// that would allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a denied or blocked request: the grant line that allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// The most requests a receipt records; the rest are counted. A guest may
/// try (and be refused) as many requests as its fuel pays for.
pub const MAX_HTTP_RECORDS: usize = 256;

/// The most characters of a path a record keeps.
const MAX_RECORDED_PATH: usize = 256;

/// `path` cut to what a record keeps.
pub(crate) fn bounded(path: &str) -> String {
    match path.char_indices().nth(MAX_RECORDED_PATH) {
        Some((at, _)) => format!("{}…", &path[..at]),
        None => path.to_owned(),
    }
}

impl HttpCallRecord {
    /// A request about to be checked: failed until it is answered.
    pub(crate) fn new(method: &str, origin: String, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            origin,
            path: bounded(path),
            status: None,
            bytes_out: 0,
            bytes_in: 0,
            latency_us: 0,
            outcome: HttpOutcome::Failed,
            detail: None,
            grant: None,
        }
    }

    /// A record that is kept nowhere: for a request past the record cap.
    pub(crate) fn dropped() -> Self {
        Self::new("", String::new(), "")
    }
}

/// The requests of one call so far, shared by the hook and the bodies it
/// counts.
#[derive(Debug, Default)]
pub(crate) struct HttpLog {
    pub records: Vec<HttpCallRecord>,
    /// Requests past [`MAX_HTTP_RECORDS`], counted only.
    pub dropped: u64,
    /// Requests that passed the checks (what `http_requests` counts).
    pub sent: u32,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl HttpLog {
    /// Keeps `r`, unless the cap is reached; its index if kept.
    pub fn push(&mut self, r: HttpCallRecord) -> Option<usize> {
        if self.records.len() >= MAX_HTTP_RECORDS {
            self.dropped += 1;
            return None;
        }
        self.records.push(r);
        Some(self.records.len() - 1)
    }

    /// The grant lines of the requests refused by policy, in order, once each.
    pub fn refused_grants(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if let Some(g) = &r.grant
                && !out.contains(g)
            {
                out.push(g.clone());
            }
        }
        out
    }
}
