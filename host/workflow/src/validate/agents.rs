//! Agents and grants: each component confined by path, loaded, checked against its pin, and given exactly the grants the file declares.

use std::collections::BTreeMap;

use corral_runtime::{Agent, Budget, Capability, DirGrant, EnvGrant, Grants, Runtime};

use super::super::definition::AgentDef;
use super::super::limits::MAX_AGENTS;
use super::super::model::WorkflowAgent;
use super::super::paths::Confinement;
use super::super::source::WorkflowSource;
use super::{Validator, merge_budget};

impl Validator<'_> {
    /// Loads every agent the file declares; one that cannot be used is
    /// reported and left out.
    pub(super) async fn agents(
        &mut self,
        src: &WorkflowSource,
        rt: &Runtime,
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
        let confined = Confinement::new(&src.base_dir, &rt.config().allowed_paths);
        for (name, a) in &src.def.agents {
            let field = format!("agents.{name}");
            // By path, before anything is read.
            let path = match confined.resolve(&a.component) {
                Ok(path) => path,
                Err(e) => {
                    self.err(format!("{field}.component"), e);
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
            let grants = self.grants(name, a, &agent, &confined);
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
    fn grants(
        &mut self,
        name: &str,
        a: &AgentDef,
        agent: &Agent,
        confined: &Confinement,
    ) -> Grants {
        let field = format!("agents.{name}");
        let mut grants = Grants::default();
        for (i, e) in a.grants.env.iter().enumerate() {
            match EnvGrant::parse(e) {
                Ok(g) => grants.env.push(g),
                Err(msg) => self.err(format!("{field}.grants.env[{i}]"), msg),
            }
        }
        for (i, d) in a.grants.dirs.iter().enumerate() {
            let at = format!("{field}.grants.dirs[{i}].host");
            let host = match confined.resolve(&d.host) {
                Ok(host) => host,
                Err(e) => {
                    self.err(at, e);
                    continue;
                }
            };
            if !host.is_dir() {
                self.err(at, format!("{} is not a directory", host.display()));
            }
            grants.dirs.push(DirGrant {
                host,
                guest: d.guest.clone(),
                writable: d.writable,
            });
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
