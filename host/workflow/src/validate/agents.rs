//! Agents and grants: each component confined by path, loaded, checked against its pin, and given exactly the grants the file declares.

use std::collections::BTreeMap;

use corral_runtime::{Agent, Budget, Capability, DirGrant, EnvGrant, Grants, Runtime};

use super::super::definition::AgentDef;
use super::super::limits::MAX_AGENTS;
use super::super::model::WorkflowAgent;
use super::super::scope::Scope;
use super::super::source::WorkflowSource;
use super::{Validator, merge_budget};

impl Validator<'_> {
    /// Loads every agent the file declares; one that cannot be used is
    /// reported and left out.
    pub(super) async fn agents(
        &mut self,
        src: &WorkflowSource,
        rt: &Runtime,
        scope: &dyn Scope,
    ) -> BTreeMap<String, WorkflowAgent> {
        let mut agents = BTreeMap::new();
        if src.def.agents.len() > MAX_AGENTS {
            self.err(
                "agents",
                format!(
                    "the workflow declares {} agents; the limit is {MAX_AGENTS}",
                    src.def.agents.len()
                ),
            );
            return agents;
        }
        for (name, a) in &src.def.agents {
            let field = format!("agents.{name}");
            // By name, before anything is read.
            let path = match scope.component(&a.component.to_string_lossy()) {
                Ok(path) => path,
                Err(refusal) => {
                    self.refused(format!("{field}.component"), refusal);
                    continue;
                }
            };
            let agent = match rt.load(&path).await {
                Ok(agent) => agent,
                Err(e) => {
                    self.err(format!("{field}.component"), error_chain(&e));
                    continue;
                }
            };
            if let Some(pin) = &a.digest
                && pin != agent.digest()
            {
                self.err(
                    format!("{field}.digest"),
                    format!(
                        "{} has digest {}, but the file pins {pin}; rebuild the pinned component or update the pin",
                        path.display(),
                        agent.digest()
                    ),
                );
            }
            let grants = self.grants(name, a, &agent, scope);
            self.breaker(&format!("{field}.breaker"), &a.breaker);
            self.budget(&format!("{field}.budget"), &a.budget);
            let budget = merge_budget(&Budget::default(), &a.budget);
            agents.insert(
                name.clone(),
                WorkflowAgent {
                    name: name.clone(),
                    agent,
                    grants,
                    budget,
                    breaker: a.breaker,
                },
            );
        }
        agents
    }

    /// The grants the file gives agent `name`, each directory confined by
    /// path; a capability the agent requests but is not granted is reported
    /// with the line that would grant it.
    fn grants(&mut self, name: &str, a: &AgentDef, agent: &Agent, scope: &dyn Scope) -> Grants {
        let field = format!("agents.{name}");
        let mut grants = Grants::default();
        for (i, e) in a.grants.env.iter().enumerate() {
            let at = format!("{field}.grants.env[{i}]");
            let (name, value) = match e.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => match scope.env(e) {
                    Ok(v) => (e.clone(), v),
                    Err(refusal) => {
                        self.refused(at, refusal);
                        continue;
                    }
                },
            };
            if name.is_empty() {
                self.err(at, format!("`{e}` has no variable name"));
                continue;
            }
            grants.env.push(EnvGrant { name, value });
        }
        for (i, d) in a.grants.dirs.iter().enumerate() {
            let at = format!("{field}.grants.dirs[{i}].host");
            let host = match scope.dir(&d.host.to_string_lossy()) {
                Ok(host) => host,
                Err(refusal) => {
                    self.refused(at, refusal);
                    continue;
                }
            };
            grants.dirs.push(DirGrant {
                host,
                guest: d.guest.clone(),
                writable: d.writable,
            });
        }
        for (i, alias) in a.grants.models.iter().enumerate() {
            match scope.model(alias) {
                Ok(()) => grants.models.push(alias.clone()),
                Err(refusal) => self.refused(format!("{field}.grants.models[{i}]"), refusal),
            }
        }
        for (i, spec) in a.grants.http.iter().enumerate() {
            let at = format!("{field}.grants.http[{i}]");
            match corral_runtime::http::HttpGrant::parse(spec) {
                Ok(grant) => match scope.http(&grant) {
                    Ok(()) => grants.http.push(grant),
                    Err(refusal) => self.refused(at, refusal),
                },
                Err(why) => self.err(at, why),
            }
        }
        for denial in grants.denials(&agent.info().capabilities) {
            let how = match &denial.capability {
                Capability::Env { name: var } => {
                    format!("environment variable `{var}`: add `env: [{var}]`")
                }
                Capability::Dir {
                    guest_path,
                    writable,
                } => format!(
                    "{}directory `{guest_path}`: add `dirs: [{{host: <dir>, guest: {guest_path}{}}}]`",
                    if *writable { "writable " } else { "" },
                    if *writable { ", writable: true" } else { "" }
                ),
                Capability::Model { alias } => {
                    format!("model `{alias}`: add `models: [{alias}]`")
                }
                Capability::Http { url } if url == "*" => {
                    "outbound HTTP: add where it may go, such as `http: [\"https://api.example.com\"]`,".to_owned()
                }
                Capability::Http { url } => {
                    format!("outbound HTTP to `{url}`: add `http: [\"{url}\"]`")
                }
            };
            self.err(
                format!("{field}.grants"),
                format!("agent `{name}` requests {how} under agents.{name}.grants"),
            );
        }
        grants
    }
}

/// An error with its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}
