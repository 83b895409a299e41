//! `corral.toml`: the operator's file of server settings and tenants, read as strictly as a workflow (unknown fields refused, every error with file, line and field).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_workflow::units::{parse_bytes, parse_count, parse_duration};
use serde::Deserialize;
use toml::Spanned;

use crate::tenant::{Quota, Tenant, TokenHash};
use crate::webhooks::{self, Endpoint, RunEvent, Secret};

/// Webhook endpoints one tenant may have.
const MAX_ENDPOINTS: usize = 16;

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What `corral serve` runs with, resolved and checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen unless `--listen` says otherwise.
    pub listen: Option<SocketAddr>,
    /// The store and the registered components live here.
    pub state_dir: PathBuf,
    /// Each tenant's directories live under `<data_root>/<tenant id>/`.
    pub data_root: PathBuf,
    /// How long one request may take (event streams excepted).
    pub request_timeout: Duration,
    /// On SIGTERM, how long running runs get to finish before they are
    /// interrupted (and resumed by the next start).
    pub shutdown_grace: Duration,
    /// Calls running at once across all tenants, shared fairly; `None`: the
    /// engine's instance pool size.
    pub call_slots: Option<u32>,
    /// Hashes of the tokens that may read `/metrics`; empty: anyone who can
    /// reach the listener may.
    pub metrics_tokens: Vec<TokenHash>,
    /// How webhook deliveries are timed out and retried.
    pub webhooks: webhooks::Settings,
    pub tenants: Vec<Tenant>,
}

/// A problem in the config file, located like a workflow diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}: {field}: {message}", line.map_or("?".to_string(), |l| l.to_string()))]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    server: ServerDef,
    #[serde(default, rename = "tenant")]
    tenants: Vec<TenantDef>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerDef {
    listen: Option<Spanned<String>>,
    state_dir: Option<String>,
    data_root: Option<String>,
    request_timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    call_slots: Option<Spanned<u32>>,
    #[serde(default)]
    metrics_tokens: Vec<Spanned<String>>,
    webhook_timeout: Option<Spanned<String>>,
    webhook_attempts: Option<Spanned<u32>>,
    webhook_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDef {
    id: Spanned<String>,
    /// `sha256:<hex>` of each API token (`corral token new` makes one).
    tokens: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    quota: QuotaDef,
    #[serde(default)]
    webhooks: Vec<WebhookDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDef {
    url: Spanned<String>,
    /// `whsec_<base64>`, shared with the receiver.
    secret: Spanned<String>,
    /// Event names; all of them when absent.
    #[serde(default)]
    events: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuotaDef {
    fuel_per_window: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    fuel_per_call: Option<Spanned<String>>,
    memory_per_call: Option<Spanned<String>>,
    call_timeout: Option<Spanned<String>>,
    run_timeout: Option<Spanned<String>>,
    concurrent_runs: Option<Spanned<u32>>,
    concurrent_calls: Option<Spanned<u32>>,
    runs_per_minute: Option<Spanned<u32>>,
    max_packet: Option<Spanned<String>>,
    max_upload: Option<Spanned<String>>,
    event_streams: Option<Spanned<u32>>,
    /// Model aliases the tenant's workflows may grant.
    #[serde(default)]
    models: Vec<String>,
    tokens_per_call: Option<Spanned<String>>,
    tokens_per_window: Option<Spanned<String>>,
    /// Where the tenant's agents may send HTTP requests, in grant form.
    #[serde(default)]
    http: Vec<Spanned<String>>,
    http_requests_per_call: Option<Spanned<u32>>,
    http_request_bytes_per_call: Option<Spanned<String>>,
    http_response_bytes_per_call: Option<Spanned<String>>,
    delegations_per_step: Option<Spanned<u32>>,
    delegation_depth: Option<Spanned<u32>>,
    artifact_bytes: Option<Spanned<String>>,
}

/// Reads and checks `path`; relative directories in it are taken from the
/// file's own directory.
pub fn load(path: &Path) -> Result<ServerConfig, Vec<ConfigError>> {
    let file = path.display().to_string();
    let whole = |message: String| {
        vec![ConfigError {
            file: file.clone(),
            line: None,
            field: "(file)".into(),
            message,
        }]
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(whole(format!(
            "{} bytes; a config file may have at most {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read it: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("")).to_owned();
    parse(&file, &text, &base)
}

/// Checks `text` as the contents of `file`, with relative paths under `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<ServerConfig, Vec<ConfigError>> {
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    let def: FileDef = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| c.line(s.start));
            return Err(vec![ConfigError {
                file: file.into(),
                line,
                field: "(file)".into(),
                message: e.message().trim().to_owned(),
            }]);
        }
    };
    let config = c.server(def, base);
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(c.errors)
    }
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&mut self, at: &Spanned<T>, field: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.into(),
            line: Some(self.line(at.span().start)),
            field: field.into(),
            message,
        });
    }

    /// A unit-bearing value (`50G`, `256MiB`, `30s`), or `default`.
    fn unit<T: Copy>(
        &mut self,
        v: &Option<Spanned<String>>,
        field: &str,
        parse: fn(&str) -> Result<T, String>,
        default: T,
    ) -> T {
        match v {
            None => default,
            Some(s) => match parse(s.get_ref()) {
                Ok(v) => v,
                Err(e) => {
                    self.err(s, field, e);
                    default
                }
            },
        }
    }

    fn server(&mut self, def: FileDef, base: &Path) -> ServerConfig {
        let s = &def.server;
        let listen = s.listen.as_ref().and_then(|l| match l.get_ref().parse() {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(
                    l,
                    "server.listen",
                    format!("`{}` is not an address:port ({e})", l.get_ref()),
                );
                None
            }
        });
        let request_timeout = self.unit(
            &s.request_timeout,
            "server.request_timeout",
            parse_duration,
            Duration::from_secs(30),
        );
        let shutdown_grace = self.unit(
            &s.shutdown_grace,
            "server.shutdown_grace",
            parse_duration,
            Duration::from_secs(30),
        );
        let dir = |d: &Option<String>, default: &str| base.join(d.as_deref().unwrap_or(default));
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        let tenants = def
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| self.tenant(i, t, &mut ids, &mut hashes))
            .collect();
        let call_slots = s.call_slots.as_ref().and_then(|n| {
            if *n.get_ref() == 0 {
                self.err(n, "server.call_slots", "must be at least 1".into());
                None
            } else {
                Some(*n.get_ref())
            }
        });
        let mut metrics_tokens = Vec::new();
        for (i, t) in s.metrics_tokens.iter().enumerate() {
            match TokenHash::parse(t.get_ref()) {
                Ok(h) => metrics_tokens.push(h),
                Err(e) => self.err(t, &format!("server.metrics_tokens[{i}]"), e),
            }
        }
        let webhooks = self.webhook_settings(s);
        ServerConfig {
            listen,
            call_slots,
            metrics_tokens,
            webhooks,
            state_dir: dir(&s.state_dir, "corral-state"),
            data_root: dir(&s.data_root, "tenants"),
            request_timeout,
            shutdown_grace,
            tenants,
        }
    }

    fn tenant(
        &mut self,
        i: usize,
        t: &TenantDef,
        ids: &mut HashSet<String>,
        hashes: &mut HashSet<TokenHash>,
    ) -> Tenant {
        let at = format!("tenant[{i}]");
        let id = t.id.get_ref();
        if !valid_id(id) {
            self.err(
                &t.id,
                &format!("{at}.id"),
                format!("`{id}` is not a tenant id: use 1 to 64 of a-z, 0-9, `-` and `_`"),
            );
        } else if !ids.insert(id.clone()) {
            self.err(
                &t.id,
                &format!("{at}.id"),
                format!("tenant `{id}` is declared twice"),
            );
        }
        let mut token_hashes = Vec::new();
        for (j, tok) in t.tokens.iter().enumerate() {
            let field = format!("{at}.tokens[{j}]");
            match TokenHash::parse(tok.get_ref()) {
                Ok(h) if !hashes.insert(h) => {
                    self.err(tok, &field, "this token hash is given twice".into());
                }
                Ok(h) => token_hashes.push(h),
                Err(e) => self.err(tok, &field, e),
            }
        }
        if t.tokens.is_empty() {
            self.err(
                &t.id,
                &format!("{at}.tokens"),
                format!("tenant `{id}` has no token; add one made by `corral token new`"),
            );
        }
        if t.webhooks.len() > MAX_ENDPOINTS {
            self.err(
                &t.id,
                &format!("{at}.webhooks"),
                format!(
                    "{} endpoints; a tenant may have at most {MAX_ENDPOINTS}",
                    t.webhooks.len()
                ),
            );
        }
        let webhooks = t
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(j, w)| self.endpoint(&format!("{at}.webhooks[{j}]"), w))
            .collect();
        Tenant {
            id: id.clone(),
            token_hashes,
            secrets: t.secrets.clone(),
            quota: self.quota(&format!("{at}.quota"), &t.quota),
            webhooks,
        }
    }

    fn webhook_settings(&mut self, s: &ServerDef) -> webhooks::Settings {
        let d = webhooks::Settings::default();
        let attempts = match &s.webhook_attempts {
            Some(n) if !(1..=100).contains(n.get_ref()) => {
                self.err(n, "server.webhook_attempts", "must be from 1 to 100".into());
                d.attempts
            }
            Some(n) => *n.get_ref(),
            None => d.attempts,
        };
        webhooks::Settings {
            timeout: self.unit(
                &s.webhook_timeout,
                "server.webhook_timeout",
                parse_duration,
                d.timeout,
            ),
            attempts,
            backoff: self.unit(
                &s.webhook_backoff,
                "server.webhook_backoff",
                parse_duration,
                d.backoff,
            ),
        }
    }

    fn endpoint(&mut self, at: &str, w: &WebhookDef) -> Option<Endpoint> {
        let url = w.url.get_ref();
        let uri: Option<axum::http::Uri> = url.parse().ok();
        let ok = uri.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        if !ok || url.len() > 2048 {
            self.err(
                &w.url,
                &format!("{at}.url"),
                format!("`{url}` is not an http:// or https:// URL with a host"),
            );
        }
        let secret = Secret::parse(w.secret.get_ref())
            .map_err(|e| self.err(&w.secret, &format!("{at}.secret"), e))
            .ok();
        let mut events = Vec::new();
        for (k, e) in w.events.iter().enumerate() {
            match e.get_ref().parse::<RunEvent>() {
                Ok(ev) if !events.contains(&ev) => events.push(ev),
                Ok(_) => {}
                Err(msg) => self.err(e, &format!("{at}.events[{k}]"), msg),
            }
        }
        if events.is_empty() {
            events = RunEvent::ALL.to_vec();
        }
        Some(Endpoint {
            url: url.clone(),
            secret: secret?,
            events,
        })
        .filter(|_| ok)
    }

    fn quota(&mut self, at: &str, q: &QuotaDef) -> Quota {
        let d = Quota::default();
        let f = |name: &str| format!("{at}.{name}");
        let count = |c: &mut Self, v: &Option<Spanned<u32>>, name: &str, default: u32| match v {
            Some(n) if *n.get_ref() == 0 => {
                c.err(n, &f(name), "must be at least 1".into());
                default
            }
            Some(n) => *n.get_ref(),
            None => default,
        };
        Quota {
            fuel_per_window: self.unit(
                &q.fuel_per_window,
                &f("fuel_per_window"),
                parse_count,
                d.fuel_per_window,
            ),
            window: self.unit(&q.window, &f("window"), parse_duration, d.window),
            fuel_per_call: self.unit(
                &q.fuel_per_call,
                &f("fuel_per_call"),
                parse_count,
                d.fuel_per_call,
            ),
            memory_per_call: self.unit(
                &q.memory_per_call,
                &f("memory_per_call"),
                parse_bytes,
                d.memory_per_call,
            ),
            call_timeout: self.unit(
                &q.call_timeout,
                &f("call_timeout"),
                parse_duration,
                d.call_timeout,
            ),
            run_timeout: self.unit(
                &q.run_timeout,
                &f("run_timeout"),
                parse_duration,
                d.run_timeout,
            ),
            concurrent_runs: count(
                self,
                &q.concurrent_runs,
                "concurrent_runs",
                d.concurrent_runs,
            ),
            concurrent_calls: count(
                self,
                &q.concurrent_calls,
                "concurrent_calls",
                d.concurrent_calls,
            ),
            runs_per_minute: count(
                self,
                &q.runs_per_minute,
                "runs_per_minute",
                d.runs_per_minute,
            ),
            max_packet: self.unit(&q.max_packet, &f("max_packet"), parse_bytes, d.max_packet),
            max_upload: self.unit(&q.max_upload, &f("max_upload"), parse_bytes, d.max_upload),
            event_streams: count(self, &q.event_streams, "event_streams", d.event_streams),
            models: q.models.clone(),
            http: q
                .http
                .iter()
                .filter_map(
                    |g| match corral_runtime::http::HttpGrant::parse(g.get_ref()) {
                        Ok(grant) => Some(grant),
                        Err(e) => {
                            self.err(g, &f("http"), e);
                            None
                        }
                    },
                )
                .collect(),
            tokens_per_call: self.unit(
                &q.tokens_per_call,
                &f("tokens_per_call"),
                parse_count,
                d.tokens_per_call,
            ),
            tokens_per_window: self.unit(
                &q.tokens_per_window,
                &f("tokens_per_window"),
                parse_count,
                d.tokens_per_window,
            ),
            http_requests_per_call: count(
                self,
                &q.http_requests_per_call,
                "http_requests_per_call",
                d.http_requests_per_call,
            ),
            http_request_bytes_per_call: self.unit(
                &q.http_request_bytes_per_call,
                &f("http_request_bytes_per_call"),
                parse_bytes,
                d.http_request_bytes_per_call,
            ),
            http_response_bytes_per_call: self.unit(
                &q.http_response_bytes_per_call,
                &f("http_response_bytes_per_call"),
                parse_bytes,
                d.http_response_bytes_per_call,
            ),
            artifact_bytes: self.unit(
                &q.artifact_bytes,
                &f("artifact_bytes"),
                parse_bytes,
                d.artifact_bytes,
            ),
            delegations_per_step: count(
                self,
                &q.delegations_per_step,
                "delegations_per_step",
                d.delegations_per_step,
            ),
            delegation_depth: count(
                self,
                &q.delegation_depth,
                "delegation_depth",
                d.delegation_depth,
            ),
        }
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn check(text: &str) -> Result<ServerConfig, Vec<ConfigError>> {
        parse("corral.toml", text, Path::new("/srv"))
    }

    #[test]
    fn a_tenant_with_quotas_reads_back() {
        let c = check(&format!(
            "[server]\nlisten = \"127.0.0.1:8700\"\n\n[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\"]\nsecrets = {{ KEY = \"v\" }}\n[tenant.quota]\nfuel_per_window = \"50G\"\nwindow = \"1h\"\nmemory_per_call = \"64MiB\"\nconcurrent_runs = 3\nhttp_requests_per_call = 8\nhttp_response_bytes_per_call = \"2MiB\"\ndelegation_depth = 2\nartifact_bytes = \"5GiB\"\n"
        ))
        .unwrap();
        assert_eq!(c.state_dir, Path::new("/srv/corral-state"));
        let t = &c.tenants[0];
        assert_eq!(t.id, "acme");
        assert_eq!(t.quota.fuel_per_window, 50_000_000_000);
        assert_eq!(t.quota.window, Duration::from_secs(3600));
        assert_eq!(t.quota.memory_per_call, 64 << 20);
        assert_eq!(t.quota.concurrent_runs, 3);
        assert_eq!(t.quota.http_requests_per_call, 8);
        assert_eq!(t.quota.http_response_bytes_per_call, 2 << 20);
        assert_eq!(t.quota.artifact_bytes, 5 << 30);
        assert_eq!(t.quota.http_request_bytes_per_call, 1 << 20, "the default");
        assert_eq!(
            (t.quota.delegation_depth, t.quota.delegations_per_step),
            (2, 64)
        );
        assert_eq!(t.secrets["KEY"], "v");
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let e = check(&format!(
            "[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\"]\n[tenant.quota]\nfuel_per_call = \"lots\"\n"
        ))
        .unwrap_err();
        assert_eq!(e[0].line, Some(5), "{e:?}");
        assert_eq!(e[0].field, "tenant[0].quota.fuel_per_call");

        let e = check("[[tenant]]\nid = \"acme\"\ntokens = []\nsecret = 1\n").unwrap_err();
        assert_eq!(e[0].line, Some(4), "{e:?}");
        assert!(e[0].message.contains("unknown field `secret`"), "{e:?}");
    }

    #[test]
    fn ids_and_token_hashes_are_unique_and_well_formed() {
        let e = check(&format!(
            "[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\"]\n[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\", \"plain-token\"]\n"
        ))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["tenant[1].id", "tenant[1].tokens[0]", "tenant[1].tokens[1]"],
            "{e:?}"
        );
        assert!(e[2].message.contains("sha256:"), "{e:?}");
    }

    #[test]
    fn webhooks_read_back_and_bad_ones_name_their_field() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let c = check(&format!(
            "[server]\nwebhook_backoff = \"1s\"\n[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\"]\n[[tenant.webhooks]]\nurl = \"https://hooks.example/corral\"\nsecret = \"{secret}\"\nevents = [\"run.failed\"]\n[[tenant.webhooks]]\nurl = \"http://127.0.0.1:9/all\"\nsecret = \"{secret}\"\n"
        ))
        .unwrap();
        assert_eq!(c.webhooks.backoff, Duration::from_secs(1));
        let w = &c.tenants[0].webhooks;
        assert_eq!(w[0].events, [RunEvent::Failed]);
        assert_eq!(w[1].events, RunEvent::ALL);

        let e = check(&format!(
            "[[tenant]]\nid = \"acme\"\ntokens = [\"{HASH}\"]\n[[tenant.webhooks]]\nurl = \"file:///etc/passwd\"\nsecret = \"hunter2\"\nevents = [\"run.exploded\"]\n"
        ))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tenant[0].webhooks[0].url",
                "tenant[0].webhooks[0].secret",
                "tenant[0].webhooks[0].events[0]"
            ],
            "{e:?}"
        );
        assert_eq!(e[0].line, Some(5), "{e:?}");
        assert!(
            !e[1].message.contains("hunter2"),
            "a secret is never echoed: {e:?}"
        );
    }
}
