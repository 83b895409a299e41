//! Tenants: who a bearer token names, the quotas the operator set, and the scope a tenant's workflow resolves in (its registered agents, its data root, its secrets).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use corral_workflow::scope::{Refusal, Scope};
use sha2::{Digest, Sha256};

/// `sha256` of an API token; only this is kept, in the config and in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a token as a client presents it.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Reads `sha256:<64 hex digits>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not a token hash: write `sha256:<64 hex digits>` (`corral token new` prints one); the token itself never goes in this file",
                shorten(s)
            )
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let bytes = hex::decode(hex).map_err(|_| bad())?;
        bytes.try_into().map(Self).map_err(|_| bad())
    }

    pub fn to_hex(self) -> String {
        format!("sha256:{}", hex::encode(self.0))
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(24) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// What one tenant may spend; each a ceiling the tenant's workflows cannot raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Fuel all of the tenant's calls may use per `window`.
    pub fuel_per_window: u64,
    pub window: Duration,
    /// The most any one call may have of each.
    pub fuel_per_call: u64,
    pub memory_per_call: u64,
    pub call_timeout: Duration,
    /// Wall-clock time of a whole run, from submission.
    pub run_timeout: Duration,
    pub concurrent_runs: u32,
    pub concurrent_calls: u32,
    pub runs_per_minute: u32,
    /// Largest packet (a submission's params, an approval's input).
    pub max_packet: u64,
    /// Largest component upload.
    pub max_upload: u64,
    /// Event streams the tenant may have open at once.
    pub event_streams: u32,
    /// Model aliases its workflows may grant; none unless the operator lists them.
    pub models: Vec<String>,
    /// The most model tokens any one call may use.
    pub tokens_per_call: u64,
    /// Model tokens all its calls may use per `window`, across processes.
    pub tokens_per_window: u64,
    /// The ceiling of its workflows' `grants.http`: each grant must lie
    /// within one of these. None unless the operator lists them.
    pub http: Vec<corral_runtime::http::HttpGrant>,
    /// The most outbound HTTP requests any one call may send.
    pub http_requests_per_call: u32,
    /// The most bytes of request bodies any one call may send.
    pub http_request_bytes_per_call: u64,
    /// The most bytes of response bodies any one call may read.
    pub http_response_bytes_per_call: u64,
    /// The most delegated calls any one step may make (`max_delegations`).
    pub delegations_per_step: u32,
    /// The deepest its steps' delegations may nest (`delegation_depth`).
    pub delegation_depth: u32,
    /// The most bytes the artifacts of all its runs may take together; a
    /// run's own `budget.artifact_bytes` is held to it too.
    pub artifact_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            fuel_per_window: 100_000_000_000,
            window: Duration::from_secs(3600),
            fuel_per_call: 10_000_000_000,
            memory_per_call: 256 << 20,
            call_timeout: Duration::from_secs(30),
            run_timeout: Duration::from_secs(3600),
            concurrent_runs: 16,
            concurrent_calls: 4,
            runs_per_minute: 60,
            max_packet: 1 << 20,
            max_upload: 64 << 20,
            event_streams: 64,
            models: Vec::new(),
            tokens_per_call: 100_000,
            tokens_per_window: 10_000_000,
            http: Vec::new(),
            http_requests_per_call: corral_runtime::Budget::DEFAULT_HTTP_REQUESTS,
            http_request_bytes_per_call: corral_runtime::Budget::DEFAULT_HTTP_REQUEST_BYTES,
            http_response_bytes_per_call: corral_runtime::Budget::DEFAULT_HTTP_RESPONSE_BYTES,
            delegations_per_step: corral_workflow::limits::DEFAULT_DELEGATIONS,
            delegation_depth: corral_workflow::limits::DEFAULT_DELEGATION_DEPTH,
            artifact_bytes: 10 << 30,
        }
    }
}

/// A tenant as the operator declared it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token_hashes: Vec<TokenHash>,
    /// Values for environment grants that name a variable only.
    pub secrets: BTreeMap<String, String>,
    pub quota: Quota,
    /// Where its run events are posted.
    pub webhooks: Vec<crate::webhooks::Endpoint>,
}

/// Every tenant, found by token.
#[derive(Debug, Default)]
pub struct Tenants {
    by_token: HashMap<TokenHash, usize>,
    all: Vec<std::sync::Arc<Tenant>>,
}

impl Tenants {
    pub fn new(tenants: Vec<Tenant>) -> Self {
        let all: Vec<_> = tenants.into_iter().map(std::sync::Arc::new).collect();
        let by_token = all
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.token_hashes.iter().map(move |h| (*h, i)))
            .collect();
        Self { by_token, all }
    }

    /// The tenant a bearer token belongs to.
    pub fn by_token(&self, token: &str) -> Option<std::sync::Arc<Tenant>> {
        self.by_token
            .get(&TokenHash::of(token))
            .map(|&i| self.all[i].clone())
    }

    pub fn get(&self, id: &str) -> Option<std::sync::Arc<Tenant>> {
        self.all.iter().find(|t| t.id == id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &std::sync::Arc<Tenant>> {
        self.all.iter()
    }
}

/// A tenant's workflow resolves here: components only among its registered
/// agents, directories only under its data root, variables only from its
/// secrets. Nothing names a server path or reads the server's environment.
pub struct TenantScope {
    pub tenant: std::sync::Arc<Tenant>,
    /// Registered name → `sha256:` digest.
    pub agents: BTreeMap<String, String>,
    /// Where registered components are kept, by digest: this process's
    /// copies of what the store holds.
    pub components: PathBuf,
    /// The store a component missing from `components` is copied from (an
    /// upload another server sharing the database received).
    pub store: Option<std::sync::Arc<dyn corral_store::Store>>,
    /// `<data_root>/<tenant id>`.
    pub data_root: PathBuf,
}

impl Scope for TenantScope {
    fn http(&self, grant: &corral_runtime::http::HttpGrant) -> Result<(), Refusal> {
        let ceiling = &self.tenant.quota.http;
        if ceiling.iter().any(|c| c.covers(grant)) {
            return Ok(());
        }
        let allowed: Vec<String> = ceiling.iter().map(|c| format!("`{c}`")).collect();
        Err(Refusal::denied(format!(
            "tenant `{}` may not grant HTTP to `{grant}`; its ceiling (quota.http) allows {}",
            self.tenant.id,
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        )))
    }

    fn model(&self, alias: &str) -> Result<(), Refusal> {
        let q = &self.tenant.quota;
        if q.models.iter().any(|m| m == alias) {
            return Ok(());
        }
        Err(Refusal::denied(format!(
            "tenant `{}` may not use model `{alias}`; its ceiling (quota.models) allows {}",
            self.tenant.id,
            if q.models.is_empty() {
                "none".to_owned()
            } else {
                q.models.join(", ")
            }
        )))
    }

    fn component(&self, reference: &str) -> Result<PathBuf, Refusal> {
        let digest = match self.agents.get(reference) {
            Some(d) => d.clone(),
            None if self.agents.values().any(|d| d == reference) => reference.to_owned(),
            None => {
                return Err(Refusal::denied(format!(
                    "`{}` is not an agent registered by tenant `{}`; a tenant's workflow names its agents by the name or `sha256:` digest they were uploaded with (POST /v1/agents), never a path",
                    shorten(reference),
                    self.tenant.id
                )));
            }
        };
        let path = component_path(&self.components, &digest);
        if !path.exists()
            && let Some(store) = &self.store
        {
            fetch_component(store.as_ref(), &self.components, &digest, &path)
                .map_err(|e| Refusal::invalid(format!("agent `{}`: {e}", shorten(reference))))?;
        }
        Ok(path)
    }

    fn dir(&self, host: &str) -> Result<PathBuf, Refusal> {
        let relative = Path::new(host);
        let inside = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(Refusal::denied(format!(
                "`{}` is outside tenant `{}`'s data root; name a directory relative to it, without `..`",
                shorten(host),
                self.tenant.id
            )));
        }
        let dir = self.data_root.join(relative);
        let (Ok(real), Ok(root)) = (dir.canonicalize(), self.data_root.canonicalize()) else {
            return Err(Refusal::invalid(format!(
                "`{}` does not exist in tenant `{}`'s data root",
                shorten(host),
                self.tenant.id
            )));
        };
        if !real.starts_with(&root) {
            return Err(Refusal::denied(format!(
                "`{}` leads through a symbolic link outside tenant `{}`'s data root",
                shorten(host),
                self.tenant.id
            )));
        }
        if !real.is_dir() {
            return Err(Refusal::invalid(format!(
                "`{}` is not a directory",
                shorten(host)
            )));
        }
        Ok(real)
    }

    fn env(&self, name: &str) -> Result<String, Refusal> {
        self.tenant.secrets.get(name).cloned().ok_or_else(|| {
            Refusal::denied(format!(
                "tenant `{}` has no secret `{}`; the operator declares secrets under the tenant in corral.toml, or pass `{}=VALUE`",
                self.tenant.id,
                shorten(name),
                shorten(name)
            ))
        })
    }
}

/// Where the component with `digest` is kept.
/// Copies the component `digest` from the store to `path`, checking that
/// the bytes are the ones the digest names.
fn fetch_component(
    store: &dyn corral_store::Store,
    dir: &Path,
    digest: &str,
    path: &Path,
) -> Result<(), String> {
    let bytes = store
        .component(digest)
        .map_err(|e| format!("cannot read its component from the store: {e}"))?
        .ok_or_else(|| {
            format!(
                "its component `{}` is registered but not stored; upload it again",
                shorten(digest)
            )
        })?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(format!(
            "the store's copy of `{}` has the digest `{}`: it is damaged",
            shorten(digest),
            shorten(&actual)
        ));
    }
    let tmp = crate::agents::write_aside(dir, &bytes)
        .map_err(|e| format!("cannot keep its component: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot keep its component: {e}"))
}

pub fn component_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join(format!("{hex}.wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(root: &Path) -> TenantScope {
        TenantScope {
            tenant: std::sync::Arc::new(Tenant {
                id: "acme".into(),
                token_hashes: vec![TokenHash::of("t")],
                secrets: [("KEY".to_string(), "v".to_string())].into(),
                quota: Quota::default(),
                webhooks: Vec::new(),
            }),
            agents: [("echo".to_string(), "sha256:ab".to_string())].into(),
            components: root.join("components"),
            store: None,
            data_root: root.join("acme"),
        }
    }

    #[test]
    fn a_tenant_grants_http_only_within_its_ceiling() {
        use corral_runtime::http::HttpGrant;
        let tmp = tempfile::tempdir().unwrap();
        let mut s = scope(tmp.path());
        let g = |s| HttpGrant::parse(s).unwrap();
        let refused = s.http(&g("https://api.example.com/v1")).unwrap_err();
        assert!(refused.denied);
        assert!(refused.message.contains("quota.http") && refused.message.contains("none"));
        let mut t = (*s.tenant).clone();
        t.quota.http = vec![g("https://api.example.com")];
        s.tenant = std::sync::Arc::new(t);
        assert!(s.http(&g("GET https://api.example.com/v1")).is_ok());
        assert!(s.http(&g("https://api.example.com:8443")).is_err());
        assert!(s.http(&g("https://evil.example.com")).is_err());
    }

    #[test]
    fn a_tenant_grants_only_the_models_its_ceiling_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = scope(tmp.path());
        let refused = s.model("fast").unwrap_err();
        assert!(refused.denied);
        assert!(refused.message.contains("quota.models") && refused.message.contains("none"));
        let mut t = (*s.tenant).clone();
        t.quota.models = vec!["fast".into()];
        s.tenant = std::sync::Arc::new(t);
        assert!(s.model("fast").is_ok());
        assert!(s.model("huge").unwrap_err().message.contains("allows fast"));
    }

    #[test]
    fn a_tenant_names_registered_agents_only() {
        let tmp = tempfile::tempdir().unwrap();
        let s = scope(tmp.path());
        let by_name = s.component("echo").unwrap();
        assert_eq!(by_name, tmp.path().join("components/ab.wasm"));
        assert_eq!(s.component("sha256:ab").unwrap(), by_name);
        for path in ["/etc/passwd", "../x.wasm", "echo.wasm", "sha256:cd"] {
            assert!(s.component(path).unwrap_err().denied, "{path}");
        }
    }

    #[test]
    fn directories_stay_under_the_data_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("acme/inbox")).unwrap();
        std::fs::create_dir_all(tmp.path().join("other")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("other"), tmp.path().join("acme/out")).unwrap();
        let s = scope(tmp.path());
        assert!(s.dir("inbox").unwrap().ends_with("acme/inbox"));
        for bad in ["/tmp", "../other", "inbox/../../other", "out"] {
            assert!(s.dir(bad).unwrap_err().denied, "{bad}");
        }
        assert!(!s.dir("missing").unwrap_err().denied);
    }

    #[test]
    fn variables_come_from_the_tenants_secrets_never_the_servers_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let s = scope(tmp.path());
        assert_eq!(s.env("KEY").unwrap(), "v");
        assert!(s.env("PATH").unwrap_err().denied);
    }

    #[test]
    fn tokens_are_found_by_their_hash() {
        let h = TokenHash::of("secret-token");
        assert_eq!(TokenHash::parse(&h.to_hex()).unwrap(), h);
        assert!(TokenHash::parse("secret-token").is_err());
        let tenants = Tenants::new(vec![Tenant {
            id: "acme".into(),
            token_hashes: vec![h],
            secrets: BTreeMap::new(),
            quota: Quota::default(),
            webhooks: Vec::new(),
        }]);
        assert_eq!(tenants.by_token("secret-token").unwrap().id, "acme");
        assert!(tenants.by_token("other").is_none());
    }
}
