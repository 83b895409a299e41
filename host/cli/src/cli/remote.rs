//! `--server`: the commands that speak to a `corral serve` over HTTP (its `/v1` API) instead of opening the local state directory, with the same output and exit codes.

mod commands;
mod sse;

use std::time::Duration;

use serde_json::Value;

pub use commands::dispatch;

use super::Exit;

/// The largest answer read from the server (a run's view with its outputs).
const MAX_REPLY: u64 = 64 << 20;

/// A server and the token to speak to it with.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// The local file a submitted workflow came from: the server calls it
    /// `submitted.yaml`, and errors should name the file the user has.
    local_file: std::cell::RefCell<Option<String>>,
}

/// A request that did not get a 2xx answer, already reported on stderr.
pub struct Failed(pub Exit);

impl Remote {
    /// Checks the URL; the token comes from `--token` or `CORRAL_TOKEN`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, Exit> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            eprintln!(
                "error: --server `{url}` is not an http:// or https:// URL (for example http://127.0.0.1:8700)"
            );
            return Err(Exit::Usage);
        }
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            eprintln!(
                "error: --server needs an API token: set CORRAL_TOKEN (or pass --token); the operator gives each tenant one"
            );
            return Err(Exit::Usage);
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            base,
            token: token.trim().to_owned(),
            agent,
            local_file: Default::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn get(&self, path: &str) -> Result<Value, Failed> {
        let res = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .config()
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .call();
        self.answer(path, res)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failed> {
        let res = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .config()
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .send_json(body);
        self.answer(path, res)
    }

    /// A streaming GET: the body is read as it comes, with no overall timeout.
    pub fn stream(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failed> {
        let mut req = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        match req.call() {
            Ok(res) if res.status().is_success() => Ok(res),
            other => self
                .answer(path, other)
                .map(|_| unreachable!("a 2xx is returned above")),
        }
    }

    fn answer(
        &self,
        path: &str,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, Failed> {
        let mut res = res.map_err(|e| {
            eprintln!("error: cannot reach the server at {}: {e}", self.url(path));
            Failed(Exit::Host)
        })?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_string()
            .map_err(|e| {
                eprintln!("error: cannot read the server's answer to {path}: {e}");
                Failed(Exit::Host)
            })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let local = self.local_file.borrow();
        Err(Failed(report_problem(
            status,
            &body,
            retry_after.as_deref(),
            local.as_deref(),
        )))
    }

    /// Errors about a submitted workflow name `file` from now on.
    pub fn submitting(&self, file: &std::path::Path) {
        *self.local_file.borrow_mut() = Some(file.display().to_string());
    }
}

/// Prints an RFC 9457 problem the way local errors are printed, and picks
/// the exit code a local failure of the same kind has.
fn report_problem(
    status: u16,
    body: &Value,
    retry_after: Option<&str>,
    local_file: Option<&str>,
) -> Exit {
    let detail = body["detail"]
        .as_str()
        .or(body.as_str())
        .unwrap_or("no detail");
    eprintln!("error: {detail} (HTTP {status})");
    for e in body["errors"].as_array().into_iter().flatten() {
        let line = e["line"]
            .as_u64()
            .map(|l| l.to_string())
            .unwrap_or_default();
        let file = match (e["file"].as_str(), local_file) {
            (Some("submitted.yaml" | "submitted.json"), Some(local)) => local,
            (Some(f), _) => f,
            (None, _) => "?",
        };
        eprintln!(
            "  {file}:{}: {}: {}",
            line,
            e["field"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
    if let Some(q) = body.get("quota").filter(|q| q.is_object()) {
        eprintln!(
            "  quota `{}`: limit {}, used {}{}",
            q["quota"].as_str().unwrap_or("?"),
            q["limit"],
            q["used"],
            q["resets_in_secs"]
                .as_u64()
                .map(|s| format!(", resets in {s}s"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = retry_after {
        eprintln!("  try again in {r}s");
    }
    let kind = body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("");
    match kind {
        "unauthorized" | "above-ceiling" => Exit::Policy,
        // A conflict is a request the run's state does not allow now
        // (approving a step that does not wait): a usage error locally too.
        "not-found" | "invalid-request" | "conflict" => Exit::Usage,
        "invalid-workflow" => Exit::InvalidWorkflow,
        "invalid-agent" => Exit::NotAnAgent,
        "quota-exceeded" => Exit::Budget,
        "too-large" => Exit::Contract,
        _ => Exit::Host,
    }
}
