//! Static validation: every agent loaded and granted, every reference and condition compiled, no cycles, every edge type-checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::{Budget, Capability, DirGrant, EnvGrant, Grants, Runtime};

use super::condition::Condition;
use super::definition::{
    ApprovalDef, BreakerDef, BudgetDef, CacheDef, Join, OnTimeout, ParamType, StepDef,
};
use super::edges::{Child, SchemaAt, Types, fits, json_type, list};
use super::model::{
    Approval, ForEach, RETRY_KINDS, Repeat, RetryPolicy, Step, Workflow, WorkflowAgent,
};
use super::reference::{Parsed, Reference, Seg, Source, Template};
use super::source::{Diagnostic, SourceMap, WorkflowSource};

use super::limits::{
    DEFAULT_MAX_ITEMS, MAX_AGENTS, MAX_APPROVAL_TIMEOUT, MAX_ATTEMPTS, MAX_BACKOFF,
    MAX_BREAKER_THRESHOLD, MAX_CACHE_TTL, MAX_CONCURRENCY, MAX_COOLDOWN, MAX_FUEL, MAX_ITEMS,
    MAX_ITERATIONS, MAX_JITTER, MAX_PARAM_BYTES, MAX_RETRY_DELAY, MAX_STEPS, MAX_TIMEOUT,
    MIN_BACKOFF,
};
use super::paths::Confinement;

/// Validates a parsed workflow; every problem found is reported, not just the first.
pub async fn validate(src: &WorkflowSource, rt: &Runtime) -> Result<Workflow, Vec<Diagnostic>> {
    let mut v = Validator {
        map: &src.map,
        diags: Vec::new(),
        max_memory: rt.config().engine.max_memory_bytes,
    };
    let agents = v.agents(src, rt).await;
    v.params(src);
    let def = &src.def;
    v.fuel("budget.fuel", def.budget.fuel.0);
    if def.budget.max_concurrency == 0 || def.budget.max_concurrency > MAX_CONCURRENCY {
        v.err(
            "budget.max_concurrency",
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        );
    }

    // Ids first, so references can be checked in any order.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, s) in def.steps.iter().enumerate() {
        if !valid_id(&s.id) {
            v.err(
                format!("steps[{i}].id"),
                format!(
                    "`{}` is not a valid id: use letters, digits, `_` and `-`",
                    s.id
                ),
            );
        }
        if let Some(first) = ids.insert(&s.id, i) {
            v.err(
                format!("steps[{i}].id"),
                format!("`{}` is already the id of steps[{first}]", s.id),
            );
        }
    }
    if def.steps.is_empty() {
        v.err("steps", "a workflow needs at least one step".to_owned());
    }
    if def.steps.len() > MAX_STEPS {
        v.err(
            "steps",
            format!(
                "the workflow has {} steps; the limit is {MAX_STEPS}",
                def.steps.len()
            ),
        );
        // Every later check is per step: stop before doing them by the thousand.
        return Err(v.diags);
    }

    let mut steps: Vec<Option<Step>> = Vec::new();
    for (i, s) in def.steps.iter().enumerate() {
        steps.push(v.step(i, s, src, &ids, &agents));
    }
    let outputs = v.outputs(src, &ids);
    if !v.diags.is_empty() {
        return Err(v.diags);
    }
    let steps: Vec<Step> = steps
        .into_iter()
        .map(|s| s.expect("no diagnostics means every step compiled"))
        .collect();
    let order = match topological_order(&steps) {
        Ok(order) => order,
        Err(cycle) => {
            let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
            v.err(
                format!("steps[{}]", steps[cycle[0]].index),
                format!(
                    "steps form a cycle: {} (a step can only read steps upstream of it)",
                    names.join(" → ")
                ),
            );
            return Err(v.diags);
        }
    };
    for step in &steps {
        v.edges(step, &steps, src, &agents);
    }
    for (name, t) in &outputs {
        for placed in t.references() {
            v.producer(
                &format!("outputs.{name}"),
                placed.reference,
                None,
                &steps,
                src,
                &agents,
            );
        }
    }
    if !v.diags.is_empty() {
        return Err(v.diags);
    }

    // Renumber dependencies to positions in the topological order.
    let position: HashMap<usize, usize> =
        order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    let mut ordered: Vec<Step> = order.iter().map(|&i| steps[i].clone()).collect();
    let by_id: HashMap<String, usize> = ordered
        .iter()
        .enumerate()
        .map(|(pos, s)| (s.id.clone(), pos))
        .collect();
    for s in &mut ordered {
        s.deps = s.deps.iter().map(|d| position[d]).collect();
        s.deps.sort_unstable();
        s.when_deps = s
            .when
            .iter()
            .flat_map(|c| c.steps())
            .map(|id| by_id[id])
            .collect();
    }
    Ok(Workflow {
        name: def.name.clone(),
        file: src.map.file.clone(),
        digest: src.digest.clone(),
        text: src.text.clone(),
        agents,
        params: def.params.clone(),
        fuel_budget: def.budget.fuel.0,
        max_concurrency: def.budget.max_concurrency,
        steps: ordered,
        outputs,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The budget of a call: the step's fields over the agent's over the defaults.
pub fn merge_budget(base: &Budget, over: &BudgetDef) -> Budget {
    Budget {
        fuel: over.fuel.map(|c| c.0).unwrap_or(base.fuel),
        memory_bytes: over.memory.map(|b| b.0).unwrap_or(base.memory_bytes),
        timeout: over.timeout.map(|d| d.0).unwrap_or(base.timeout),
        ..base.clone()
    }
}

/// Steps in an order where dependencies come first, or a cycle.
fn topological_order(steps: &[Step]) -> Result<Vec<usize>, Vec<usize>> {
    let n = steps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in steps.iter().enumerate() {
        for &d in &s.deps {
            indegree[i] += 1;
            dependents[d].push(i);
        }
    }
    // Ready steps are taken in file order, so the order is stable.
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies among the leftovers until a step repeats.
    let left: BTreeSet<usize> = (0..n).filter(|i| !order.contains(i)).collect();
    let mut path = vec![*left.first().unwrap()];
    loop {
        let last = *path.last().unwrap();
        let next = steps[last]
            .deps
            .iter()
            .copied()
            .find(|d| left.contains(d))
            .unwrap();
        if let Some(pos) = path.iter().position(|&p| p == next) {
            // In data-flow order (producer → consumer), from the step first in the file.
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap();
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        path.push(next);
    }
}

struct Validator<'m> {
    map: &'m SourceMap,
    diags: Vec<Diagnostic>,
    /// The engine's largest memory: no budget may ask for more.
    max_memory: u64,
}

impl Validator<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags.push(self.map.diag(field, message));
    }

    async fn agents(
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
            for denial in grants.denials(agent.info()) {
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

    fn params(&mut self, src: &WorkflowSource) {
        for (name, p) in &src.def.params {
            if !valid_id(name) {
                self.err(
                    format!("params.{name}"),
                    format!("`{name}` is not a valid name: use letters, digits, `_` and `-`"),
                );
            }
            if let Some(d) = &p.default
                && !param_accepts(p.ty, d)
            {
                self.err(
                    format!("params.{name}.default"),
                    format!(
                        "is {} but the param's type is {}",
                        json_type(d),
                        p.ty.json_type()
                    ),
                );
            }
        }
    }

    fn step(
        &mut self,
        i: usize,
        s: &StepDef,
        src: &WorkflowSource,
        ids: &HashMap<&str, usize>,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) -> Option<Step> {
        let f = format!("steps[{i}]");
        let before = self.diags.len();
        let def = &src.def;
        let known_agent = |v: &mut Self, field: String, name: &str| {
            if !def.agents.contains_key(name) {
                let known: Vec<&str> = def.agents.keys().map(String::as_str).collect();
                v.err(
                    field,
                    format!(
                        "unknown agent `{name}`; the file declares: {}",
                        known.join(", ")
                    ),
                );
            }
        };
        let approval = match &s.approval {
            None => {
                known_agent(self, format!("{f}.agent"), &s.agent);
                None
            }
            Some(a) => self.approval(&f, s, a),
        };
        if let Some(c) = &s.compensate {
            known_agent(self, format!("{f}.compensate"), c);
        }
        let cache = match &s.cache {
            None | Some(CacheDef::Enabled(false)) => None,
            Some(CacheDef::Enabled(true)) => Some(None),
            Some(CacheDef::Ttl { ttl }) => {
                self.duration(&format!("{f}.cache.ttl"), ttl.0, MAX_CACHE_TTL);
                Some(Some(ttl.0))
            }
        };
        self.budget(&format!("{f}.budget"), &s.budget);
        let mut deps: BTreeSet<usize> = BTreeSet::new();
        let step_ref =
            |v: &mut Self, field: &str, id: &str, deps: &mut BTreeSet<usize>| match ids.get(id) {
                Some(&j) if j == i => v.err(
                    field.to_owned(),
                    format!("step `{}` cannot depend on itself", s.id),
                ),
                Some(&j) => {
                    deps.insert(j);
                }
                None => {
                    let mut known: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
                    known.sort_unstable();
                    known.dedup();
                    v.err(
                        field.to_owned(),
                        format!("unknown step `{id}`; the steps are: {}", known.join(", ")),
                    );
                }
            };

        let input = self.template(&format!("{f}.input"), &s.input);
        if let Some(t) = &input {
            for placed in t.references() {
                let field = format!("{f}.input{}", dotted(&placed.at));
                match &placed.reference.source {
                    Source::Param(name) => self.param_ref(&field, name, def),
                    Source::Step(id) => step_ref(self, &field, id, &mut deps),
                    Source::Item if s.for_each.is_none() => self.err(
                        field,
                        "`$item` is only defined in a step with `for_each`".to_owned(),
                    ),
                    Source::Item => {}
                    Source::Output => self.err(
                        field,
                        "`$output` is only defined in `repeat.critic.input`".to_owned(),
                    ),
                }
            }
        }

        let when = s
            .when
            .as_ref()
            .and_then(|w| self.condition(&format!("{f}.when"), w, &["params", "steps"]));
        if let Some(c) = &when {
            for id in c.steps() {
                step_ref(self, &format!("{f}.when"), id, &mut deps);
            }
        }

        let for_each = s.for_each.as_ref().and_then(|text| {
            let field = format!("{f}.for_each");
            match Reference::parse(text) {
                Ok(Parsed::Ref(r)) => {
                    match &r.source {
                        Source::Param(name) => self.param_ref(&field, name, def),
                        Source::Step(id) => step_ref(self, &field, id, &mut deps),
                        _ => self.err(field.clone(), "must reference a list: `$params.<name>` or `$steps.<id>.output.<field>`".to_owned()),
                    }
                    let max_items = s.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
                    if max_items == 0 || max_items > MAX_ITEMS {
                        self.err(
                            format!("{f}.max_items"),
                            format!("must be between 1 and {MAX_ITEMS}"),
                        );
                    }
                    Some(ForEach {
                        list: r,
                        max_concurrency: s.max_concurrency.unwrap_or(def.budget.max_concurrency).max(1),
                        max_items,
                    })
                }
                Ok(Parsed::Literal(_)) => {
                    self.err(field, format!("`{text}` is not a reference; write `$params.<name>` or `$steps.<id>.output.<field>`"));
                    None
                }
                Err(e) => {
                    self.err(field, e);
                    None
                }
            }
        });
        if s.for_each.is_none() && (s.max_items.is_some() || s.max_concurrency.is_some()) {
            self.err(
                format!("{f}.max_concurrency"),
                "`max_concurrency` and `max_items` only apply with `for_each`".to_owned(),
            );
        }
        if s.max_concurrency
            .is_some_and(|n| n == 0 || n > MAX_CONCURRENCY)
        {
            self.err(
                format!("{f}.max_concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }

        for (k, dep) in s.depends_on.iter().enumerate() {
            step_ref(self, &format!("{f}.depends_on[{k}]"), dep, &mut deps);
        }

        let retry = match &s.retry {
            None => RetryPolicy::none(),
            Some(r) => {
                if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS {
                    self.err(
                        format!("{f}.retry.max_attempts"),
                        format!("must be between 1 and {MAX_ATTEMPTS}"),
                    );
                }
                // Written so that NaN fails too.
                if !(r.backoff >= MIN_BACKOFF && r.backoff <= MAX_BACKOFF) {
                    self.err(
                        format!("{f}.retry.backoff"),
                        format!("must be between {MIN_BACKOFF} and {MAX_BACKOFF}"),
                    );
                }
                if !(0.0..=MAX_JITTER).contains(&r.jitter) {
                    self.err(
                        format!("{f}.retry.jitter"),
                        format!("must be between 0 and {MAX_JITTER}"),
                    );
                }
                for (name, d) in [
                    ("initial_delay", r.initial_delay),
                    ("max_delay", r.max_delay),
                ] {
                    if d.0 > MAX_RETRY_DELAY {
                        self.err(
                            format!("{f}.retry.{name}"),
                            format!("must be at most {}", show(MAX_RETRY_DELAY)),
                        );
                    }
                }
                for (k, on) in r.on.iter().enumerate() {
                    if !RETRY_KINDS.contains(&on.as_str()) {
                        self.err(
                            format!("{f}.retry.on[{k}]"),
                            format!(
                                "`{on}` is not an error class or kind; use one of: {}",
                                RETRY_KINDS.join(", ")
                            ),
                        );
                    }
                }
                RetryPolicy {
                    max_attempts: r.max_attempts,
                    initial_delay: r.initial_delay.0,
                    backoff: r.backoff,
                    max_delay: r.max_delay.0,
                    jitter: r.jitter,
                    on: r.on.clone(),
                }
            }
        };
        if let Some(fb) = &s.fallback {
            known_agent(self, format!("{f}.fallback"), fb);
        }

        let repeat = s.repeat.as_ref().and_then(|r| {
            known_agent(self, format!("{f}.repeat.critic.agent"), &r.critic.agent);
            if r.max_iterations == 0 || r.max_iterations > MAX_ITERATIONS {
                self.err(
                    format!("{f}.repeat.max_iterations"),
                    format!("must be between 1 and {MAX_ITERATIONS}"),
                );
            }
            let critic_input =
                self.template(&format!("{f}.repeat.critic.input"), &r.critic.input)?;
            for placed in critic_input.references() {
                let field = format!("{f}.repeat.critic.input{}", dotted(&placed.at));
                match &placed.reference.source {
                    Source::Param(name) => self.param_ref(&field, name, def),
                    Source::Step(id) => step_ref(self, &field, id, &mut deps),
                    Source::Output => {}
                    Source::Item => self.err(
                        field,
                        "`$item` is not defined in a critic's input".to_owned(),
                    ),
                }
            }
            let until = self.condition(
                &format!("{f}.repeat.until"),
                &r.until,
                &["critic", "output", "iteration", "params"],
            )?;
            Some(Repeat {
                critic: r.critic.agent.clone(),
                critic_input,
                until,
                max_iterations: r.max_iterations,
                feedback: r.feedback.clone(),
            })
        });
        if s.repeat.is_some() && s.for_each.is_some() {
            self.err(
                format!("{f}.repeat"),
                "a step cannot have both `repeat` and `for_each`".to_owned(),
            );
        }

        if s.join != Join::All && deps.is_empty() {
            self.err(
                format!("{f}.join"),
                format!("`join` needs dependencies; step `{}` has none", s.id),
            );
        } else if let Join::AtLeast(n) = s.join
            && (n == 0 || n as usize > deps.len())
        {
            self.err(
                format!("{f}.join"),
                format!(
                    "`at_least: {n}` needs between 1 and {} dependencies",
                    deps.len()
                ),
            );
        }

        if self.diags.len() > before {
            return None;
        }
        let agent_budget = agents
            .get(&s.agent)
            .map(|a| a.budget.clone())
            .unwrap_or_default();
        Some(Step {
            id: s.id.clone(),
            index: i,
            agent: s.agent.clone(),
            input: input?,
            deps: deps.into_iter().collect(),
            when_deps: Vec::new(),
            when,
            for_each,
            budget: merge_budget(&agent_budget, &s.budget),
            retry,
            fallback_budget: merge_budget(
                &s.fallback
                    .as_ref()
                    .and_then(|f| agents.get(f))
                    .map(|a| a.budget.clone())
                    .unwrap_or_default(),
                &s.budget,
            ),
            fallback: s.fallback.clone(),
            on_error: s.on_error,
            repeat,
            join: s.join,
            approval,
            compensate: s.compensate.clone(),
            cache,
        })
    }

    /// Checks an approval step: no agent or agent-only fields, a usable schema and default.
    fn approval(&mut self, f: &str, s: &StepDef, a: &ApprovalDef) -> Option<Approval> {
        let agent_only = [
            ("agent", !s.agent.is_empty()),
            ("for_each", s.for_each.is_some()),
            ("repeat", s.repeat.is_some()),
            ("retry", s.retry.is_some()),
            ("fallback", s.fallback.is_some()),
            ("cache", s.cache.is_some()),
        ];
        for (field, set) in agent_only {
            if set {
                self.err(
                    format!("{f}.{field}"),
                    format!(
                        "an approval step waits for a human; `{field}` only applies to agent steps"
                    ),
                );
            }
        }
        let schema = a
            .schema
            .clone()
            .unwrap_or_else(|| serde_json::json!({ "type": "object" }));
        let compiled = crate::schema::bounded(&schema)
            .and_then(|()| jsonschema::validator_for(&schema).map_err(|e| e.to_string()));
        let validator = match compiled {
            Ok(v) => Arc::new(v),
            Err(e) => {
                self.err(
                    format!("{f}.approval.schema"),
                    format!("not a usable JSON Schema: {e}"),
                );
                return None;
            }
        };
        if let Some(t) = a.timeout {
            self.duration(&format!("{f}.approval.timeout"), t.0, MAX_APPROVAL_TIMEOUT);
        }
        let default = match (a.on_timeout, &a.default) {
            (OnTimeout::Default, None) => {
                self.err(
                    format!("{f}.approval.default"),
                    "`on_timeout: default` needs a `default` output".to_owned(),
                );
                None
            }
            (OnTimeout::Default, Some(d)) => Some(d.clone()),
            (OnTimeout::Fail, Some(_)) => {
                self.err(
                    format!("{f}.approval.default"),
                    "`default` is only used with `on_timeout: default`".to_owned(),
                );
                None
            }
            (OnTimeout::Fail, None) => None,
        };
        if a.on_timeout == OnTimeout::Default && a.timeout.is_none() {
            self.err(
                format!("{f}.approval.on_timeout"),
                "`on_timeout` needs a `timeout`".to_owned(),
            );
        }
        let approval = Approval {
            prompt: a.prompt.clone(),
            schema,
            validator,
            timeout: a.timeout.map(|t| t.0),
            default,
        };
        if let Some(d) = &approval.default
            && let Err(e) = approval.check(d)
        {
            self.err(
                format!("{f}.approval.default"),
                format!("does not match `approval.schema`: {e}"),
            );
        }
        Some(approval)
    }

    fn budget(&mut self, field: &str, b: &BudgetDef) {
        if let Some(f) = b.fuel {
            self.fuel(&format!("{field}.fuel"), f.0);
        }
        if let Some(m) = b.memory
            && (m.0 == 0 || m.0 > self.max_memory)
        {
            self.err(
                format!("{field}.memory"),
                format!(
                    "must be between 1 byte and the engine's maximum of {} bytes",
                    self.max_memory
                ),
            );
        }
        if let Some(t) = b.timeout {
            self.duration(&format!("{field}.timeout"), t.0, MAX_TIMEOUT);
        }
    }

    fn fuel(&mut self, field: &str, fuel: u64) {
        if fuel == 0 || fuel > MAX_FUEL {
            self.err(
                field.to_owned(),
                format!("must be between 1 and {MAX_FUEL} (1000000G)"),
            );
        }
    }

    /// A duration that must be positive and at most `max`.
    fn duration(&mut self, field: &str, d: std::time::Duration, max: std::time::Duration) {
        if d.is_zero() || d > max {
            self.err(
                field.to_owned(),
                format!("must be longer than 0s and at most {}", show(max)),
            );
        }
    }

    fn breaker(&mut self, field: &str, b: &BreakerDef) {
        for (name, n) in [
            ("failure_threshold", b.failure_threshold),
            ("success_threshold", b.success_threshold),
        ] {
            if n == 0 || n > MAX_BREAKER_THRESHOLD {
                self.err(
                    format!("{field}.{name}"),
                    format!("must be between 1 and {MAX_BREAKER_THRESHOLD}"),
                );
            }
        }
        self.duration(&format!("{field}.cooldown"), b.cooldown.0, MAX_COOLDOWN);
    }

    fn template(&mut self, field: &str, value: &Value) -> Option<Template> {
        match Template::compile(value) {
            Ok(t) => Some(t),
            Err(errors) => {
                for (at, e) in errors {
                    self.err(format!("{field}{at}"), e);
                }
                None
            }
        }
    }

    fn condition(&mut self, field: &str, source: &str, allowed: &[&str]) -> Option<Condition> {
        match Condition::compile(source) {
            Ok(c) => {
                let unknown: Vec<&String> = c
                    .variables()
                    .iter()
                    .filter(|v| !allowed.contains(&v.as_str()))
                    .collect();
                if unknown.is_empty() {
                    return Some(c);
                }
                let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                self.err(
                    field.to_owned(),
                    format!(
                        "`{}` reads unknown variables {}; it may read: {}{}",
                        source,
                        names.join(", "),
                        allowed.join(", "),
                        // `steps.my-step` parses as `steps.my - step`.
                        if source.contains('-') {
                            "; a step id with `-` is written `steps[\"my-step\"]`"
                        } else {
                            ""
                        }
                    ),
                );
                None
            }
            Err(e) => {
                self.err(field.to_owned(), e);
                None
            }
        }
    }

    fn param_ref(&mut self, field: &str, name: &str, def: &super::definition::WorkflowDef) {
        if !def.params.contains_key(name) {
            let known: Vec<&str> = def.params.keys().map(String::as_str).collect();
            self.err(
                field.to_owned(),
                format!(
                    "unknown param `{name}`; the params are: {}",
                    if known.is_empty() {
                        "(none)".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }

    fn outputs(
        &mut self,
        src: &WorkflowSource,
        ids: &HashMap<&str, usize>,
    ) -> Vec<(String, Template)> {
        let mut out = Vec::new();
        for (name, value) in &src.def.outputs {
            let field = format!("outputs.{name}");
            let Some(t) = self.template(&field, value) else {
                continue;
            };
            for placed in t.references() {
                match &placed.reference.source {
                    Source::Param(p) => self.param_ref(&field, p, &src.def),
                    Source::Step(id) if !ids.contains_key(id.as_str()) => {
                        self.err(field.clone(), format!("unknown step `{id}`"));
                    }
                    Source::Step(_) => {}
                    _ => self.err(
                        field.clone(),
                        "outputs may reference `$params` and `$steps` only".to_owned(),
                    ),
                }
            }
            out.push((name.clone(), t));
        }
        out
    }

    /// The schema a reference's target has, checking that its path exists.
    /// `None` means unknown (any type).
    fn producer(
        &mut self,
        field: &str,
        r: &Reference,
        generator: Option<&Step>,
        steps: &[Step],
        src: &WorkflowSource,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) -> Types {
        match &r.source {
            Source::Param(name) => {
                let ty = src.def.params.get(name)?.ty;
                if r.path.is_empty() {
                    Some(BTreeSet::from([ty.json_type().to_owned()]))
                } else {
                    None
                }
            }
            Source::Step(id) => {
                let p = steps.iter().find(|s| &s.id == id)?;
                if let Some(a) = &p.approval {
                    return self.walk_output(
                        field,
                        r,
                        &r.path,
                        SchemaAt::root(&a.schema),
                        "(the approval's input)",
                        &p.id,
                    );
                }
                let mut agents_of = vec![p.agent.as_str()];
                agents_of.extend(p.fallback.as_deref());
                let mut types: Types = Some(BTreeSet::new());
                for agent in agents_of {
                    let t = self.step_output(field, r, p, agent, agents);
                    types = match (types, t) {
                        (Some(mut a), Some(b)) => {
                            a.extend(b);
                            Some(a)
                        }
                        _ => None,
                    };
                }
                types
            }
            Source::Output => {
                let g = generator?;
                let schema = agents.get(&g.agent)?.agent.info().output_schema.clone();
                self.walk_output(
                    field,
                    r,
                    &r.path,
                    SchemaAt::root(schema.source()),
                    &g.agent,
                    &g.id,
                )
            }
            Source::Item => None,
        }
    }

    fn step_output(
        &mut self,
        field: &str,
        r: &Reference,
        p: &Step,
        agent: &str,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) -> Types {
        let schema = agents.get(agent)?.agent.info().output_schema.clone();
        let root = SchemaAt::root(schema.source());
        if p.for_each.is_none() {
            return self.walk_output(field, r, &r.path, root, agent, &p.id);
        }
        // A for-each step's output is the list of its items' outputs.
        match r.path.split_first() {
            None => Some(BTreeSet::from(["array".to_owned()])),
            Some((Seg::Index(_), rest)) => self.walk_output(field, r, rest, root, agent, &p.id),
            Some((Seg::Key(k), _)) => {
                self.err(field.to_owned(), format!(
                    "`{}`: step `{}` runs for each item, so its output is a list; index it first, such as `$steps.{}.output.0.{k}`",
                    r.text, p.id, p.id
                ));
                None
            }
        }
    }

    fn walk_output(
        &mut self,
        field: &str,
        r: &Reference,
        path: &[Seg],
        root: SchemaAt<'_>,
        agent: &str,
        step: &str,
    ) -> Types {
        match root.walk_produced(path) {
            Child::Known(at) => at.types(),
            Child::Any => None,
            Child::Absent => {
                let fields = root.property_names();
                self.err(
                    field.to_owned(),
                    format!(
                        "`{}`: agent `{agent}` (step `{step}`) has no output at `{}`{}",
                        r.text,
                        path.iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join("."),
                        if fields.is_empty() {
                            String::new()
                        } else {
                            format!("; its output fields are: {}", fields.join(", "))
                        }
                    ),
                );
                None
            }
        }
    }

    /// Checks every reference and literal of a step against the schemas on both ends.
    fn edges(
        &mut self,
        step: &Step,
        steps: &[Step],
        src: &WorkflowSource,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) {
        let f = format!("steps[{}]", step.index);
        let Some(consumer) = agents.get(&step.agent) else {
            return;
        };
        let mut consumers = vec![consumer];
        consumers.extend(step.fallback.as_ref().and_then(|fb| agents.get(fb)));
        for c in &consumers {
            self.template_edges(
                &format!("{f}.input"),
                &step.input,
                c,
                None,
                steps,
                src,
                agents,
            );
        }
        if let Some(fe) = &step.for_each {
            let t = self.producer(&format!("{f}.for_each"), &fe.list, None, steps, src, agents);
            if let Some(types) = t
                && !types.contains("array")
            {
                self.err(
                    format!("{f}.for_each"),
                    format!("`{}` gives {}, not a list", fe.list.text, list(&types)),
                );
            }
        }
        if let Some(rep) = &step.repeat
            && let Some(critic) = agents.get(&rep.critic)
        {
            self.template_edges(
                &format!("{f}.repeat.critic.input"),
                &rep.critic_input,
                critic,
                Some(step),
                steps,
                src,
                agents,
            );
            if let Some(field) = &rep.feedback {
                let schema = consumer.agent.info().input_schema.clone();
                match SchemaAt::root(schema.source()).child(&Seg::Key(field.clone())) {
                    Child::Absent => self.err(format!("{f}.repeat.feedback"), format!(
                        "agent `{}`'s input has no field `{field}` to receive the critic's feedback", step.agent
                    )),
                    Child::Known(at) => {
                        if let Err(e) = fits(&Some(BTreeSet::from(["object".to_owned()])), &at.types()) {
                            self.err(format!("{f}.repeat.feedback"), format!("the critic's output (an object) {e}"));
                        }
                    }
                    Child::Any => {}
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn template_edges(
        &mut self,
        field: &str,
        t: &Template,
        consumer: &WorkflowAgent,
        generator: Option<&Step>,
        steps: &[Step],
        src: &WorkflowSource,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) {
        let schema = consumer.agent.info().input_schema.clone();
        let root = SchemaAt::root(schema.source());
        let mut leaves = Vec::new();
        leaves_of(t, &mut Vec::new(), &mut leaves);
        for (at, leaf) in leaves {
            let place = format!("{field}{}", dotted(&at));
            // Numeric places are list elements (leaves_of numbers them).
            let segs: Vec<Seg> = at
                .iter()
                .map(|k| {
                    k.parse()
                        .map(Seg::Index)
                        .unwrap_or_else(|_| Seg::Key(k.clone()))
                })
                .collect();
            let consumer_types = match root.walk(&segs) {
                Child::Known(s) => s.types(),
                Child::Any => None,
                Child::Absent => {
                    let fields = root.property_names();
                    self.err(
                        place,
                        format!(
                            "agent `{}`'s input has no field `{}`; its input fields are: {}",
                            consumer.name,
                            at.join("."),
                            fields.join(", ")
                        ),
                    );
                    continue;
                }
            };
            let (producer, what) = match leaf {
                Leaf::Literal(v) => (
                    Some(BTreeSet::from([json_type(v).to_owned()])),
                    format!("the literal {v}"),
                ),
                Leaf::Ref(r) => (
                    self.producer(&place, r, generator, steps, src, agents),
                    format!("`{}`", r.text),
                ),
            };
            if let Err(e) = fits(&producer, &consumer_types) {
                self.err(
                    place,
                    format!("{what} {e} (agent `{}`'s input schema)", consumer.name),
                );
            }
        }
        // Required fields of every object the template builds.
        let mut objects = Vec::new();
        objects_of(t, &mut Vec::new(), &mut objects);
        for (at, keys) in objects {
            let segs: Vec<Seg> = at.iter().map(|k| Seg::Key(k.clone())).collect();
            if let Child::Known(s) = root.walk(&segs) {
                for req in s.required() {
                    if !keys.contains(&req) {
                        self.err(
                            format!("{field}{}", dotted(&at)),
                            format!(
                                "agent `{}` requires input field `{}`, which is not set",
                                consumer.name,
                                at.iter()
                                    .chain(std::iter::once(&req))
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(".")
                            ),
                        );
                    }
                }
            }
        }
    }
}

enum Leaf<'t> {
    Literal(&'t Value),
    Ref(&'t Reference),
}

fn leaves_of<'t>(t: &'t Template, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, Leaf<'t>)>) {
    match t {
        Template::Literal(v) => out.push((at.clone(), Leaf::Literal(v))),
        Template::Ref(r) => out.push((at.clone(), Leaf::Ref(r))),
        Template::Object(fields) => {
            for (k, v) in fields {
                at.push(k.clone());
                leaves_of(v, at, out);
                at.pop();
            }
        }
        // The list itself, then each element against the schema's `items`.
        Template::Array(items) => {
            out.push((at.clone(), Leaf::Literal(&ARRAY)));
            for (i, v) in items.iter().enumerate() {
                at.push(i.to_string());
                leaves_of(v, at, out);
                at.pop();
            }
        }
    }
}

static ARRAY: Value = Value::Array(Vec::new());

fn objects_of(t: &Template, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, Vec<String>)>) {
    if let Template::Object(fields) = t {
        out.push((at.clone(), fields.iter().map(|(k, _)| k.clone()).collect()));
        for (k, v) in fields {
            at.push(k.clone());
            objects_of(v, at, out);
            at.pop();
        }
    }
}

fn dotted(at: &[String]) -> String {
    at.iter().map(|k| format!(".{k}")).collect()
}

fn param_accepts(ty: ParamType, v: &Value) -> bool {
    matches!(
        (ty, v),
        (ParamType::String, Value::String(_))
            | (ParamType::Boolean, Value::Bool(_))
            | (ParamType::Array, Value::Array(_))
            | (ParamType::Object, Value::Object(_))
            | (ParamType::Number, Value::Number(_))
    ) || (ty == ParamType::Integer && (v.is_i64() || v.is_u64()))
}

/// A limit as the file would write it: `24h`, `365d`.
fn show(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Checks and converts a `--param` value for `ty`: strings stay strings,
/// other types are parsed as JSON. A value over [`MAX_PARAM_BYTES`] is
/// refused before it is parsed.
pub fn param_value(name: &str, ty: ParamType, raw: &str) -> Result<Value, String> {
    if raw.len() > MAX_PARAM_BYTES {
        return Err(format!(
            "param `{name}` is {} bytes; a param value may have at most {MAX_PARAM_BYTES} bytes (1 MiB)",
            raw.len()
        ));
    }
    let value = match ty {
        ParamType::String => Value::String(raw.to_owned()),
        _ => serde_json::from_str(raw)
            .map_err(|e| format!("param `{name}` must be {} (JSON): {e}", ty.json_type()))?,
    };
    if param_accepts(ty, &value) {
        Ok(value)
    } else {
        Err(format!(
            "param `{name}` must be {}, got {}",
            ty.json_type(),
            json_type(&value)
        ))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}
