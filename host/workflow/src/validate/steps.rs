//! Step checks: ids, references, conditions, for-each, quality gates, joins, approvals and the run's outputs, each compiled into the model.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::super::condition::Condition;
use super::super::definition::{
    ApprovalDef, CacheDef, Join, OnTimeout, ParamDef, ParamType, StepDef, WorkflowDef,
};
use super::super::limits::{
    DEFAULT_DELEGATION_DEPTH, DEFAULT_DELEGATIONS, DEFAULT_MAX_ITEMS, MAX_APPROVAL_TIMEOUT,
    MAX_CACHE_TTL, MAX_CONCURRENCY, MAX_DELEGATION_DEPTH, MAX_DELEGATIONS, MAX_ITEMS,
    MAX_ITERATIONS, MAX_STEPS,
};
use super::super::model::{Approval, ForEach, Repeat, Step, WorkflowAgent};
use super::super::reference::{Parsed, Reference, Source, Template};
use super::super::source::{Diagnostic, WorkflowSource};
use super::edges::json_type;
use super::{Validator, dotted, merge_budget, param_accepts, valid_id};

/// One step being checked: where it is, what it may name, and the
/// dependencies its references add.
struct StepCheck<'s> {
    i: usize,
    /// `steps[i]`, the prefix of its fields.
    f: String,
    s: &'s StepDef,
    def: &'s WorkflowDef,
    ids: &'s HashMap<&'s str, usize>,
    deps: BTreeSet<usize>,
}

impl Validator<'_> {
    /// Step ids by position; ids must be valid and unique. Too many steps
    /// end validation here.
    pub(super) fn step_ids<'d>(
        &mut self,
        def: &'d WorkflowDef,
    ) -> Result<HashMap<&'d str, usize>, Vec<Diagnostic>> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, s) in def.steps.iter().enumerate() {
            if !valid_id(&s.id) {
                self.err(
                    format!("steps[{i}].id"),
                    format!(
                        "`{}` is not a valid id: use letters, digits, `_` and `-`",
                        s.id
                    ),
                );
            }
            if let Some(first) = ids.insert(&s.id, i) {
                self.err(
                    format!("steps[{i}].id"),
                    format!("`{}` is already the id of steps[{first}]", s.id),
                );
            }
        }
        if def.steps.is_empty() {
            self.err("steps", "a workflow needs at least one step".to_owned());
        }
        if def.steps.len() > MAX_STEPS {
            self.err(
                "steps",
                format!(
                    "the workflow has {} steps; the limit is {MAX_STEPS}",
                    def.steps.len()
                ),
            );
            // Every later check is per step: stop before doing them by the thousand.
            return Err(std::mem::take(&mut self.diags));
        }
        Ok(ids)
    }

    /// Compiles step `i`, or `None` when it has problems (all reported).
    pub(super) fn step(
        &mut self,
        i: usize,
        s: &StepDef,
        src: &WorkflowSource,
        ids: &HashMap<&str, usize>,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) -> Option<Step> {
        let mut c = StepCheck {
            i,
            f: format!("steps[{i}]"),
            s,
            def: &src.def,
            ids,
            deps: BTreeSet::new(),
        };
        let f = c.f.clone();
        let before = self.diags.len();
        let approval = match &s.approval {
            None => {
                self.known_agent(&c, format!("{f}.agent"), &s.agent);
                None
            }
            Some(a) => self.approval(&f, s, a),
        };
        if let Some(name) = &s.compensate {
            self.known_agent(&c, format!("{f}.compensate"), name);
        }
        let cache = self.cache(&f, s.cache.as_ref());
        self.budget(&format!("{f}.budget"), &s.budget);
        if let Some(t) = s.tokens {
            self.tokens(&format!("{f}.tokens"), t.0);
        }
        self.delegation(&c, agents);
        let input = self.step_input(&mut c);
        let when = self.when(&mut c);
        let for_each = self.for_each(&mut c);
        for (k, dep) in s.depends_on.iter().enumerate() {
            self.step_ref(&mut c, &format!("{f}.depends_on[{k}]"), dep);
        }
        let retry = self.retry(&f, s.retry.as_ref());
        if let Some(fb) = &s.fallback {
            self.known_agent(&c, format!("{f}.fallback"), fb);
        }
        let repeat = self.repeat(&mut c);
        self.join(&c);

        if self.diags.len() > before {
            return None;
        }
        let budget_of = |agent: Option<&String>| {
            agent
                .and_then(|a| agents.get(a))
                .map(|a| a.budget.clone())
                .unwrap_or_default()
        };
        Some(Step {
            id: s.id.clone(),
            index: i,
            agent: s.agent.clone(),
            input: input?,
            deps: c.deps.into_iter().collect(),
            when_deps: Vec::new(),
            when,
            for_each,
            budget: merge_budget(&budget_of(Some(&s.agent)), &s.budget),
            retry,
            fallback_budget: merge_budget(&budget_of(s.fallback.as_ref()), &s.budget),
            fallback: s.fallback.clone(),
            on_error: s.on_error,
            repeat,
            join: s.join,
            approval,
            compensate: s.compensate.clone(),
            cache,
            token_budget: s.tokens.map(|t| t.0),
            delegates: s.delegates.clone(),
            max_delegations: s.max_delegations.unwrap_or(DEFAULT_DELEGATIONS),
            delegation_depth: s.delegation_depth.unwrap_or(DEFAULT_DELEGATION_DEPTH),
        })
    }

    /// `delegates` name known agents, the step's agent speaks a contract
    /// with `delegate`, and the limits are in range.
    fn delegation(&mut self, c: &StepCheck<'_>, agents: &BTreeMap<String, WorkflowAgent>) {
        let (f, s) = (&c.f, c.s);
        for (k, name) in s.delegates.iter().enumerate() {
            self.known_agent(c, format!("{f}.delegates[{k}]"), name);
        }
        if let Some(a) = agents.get(&s.agent)
            && !s.delegates.is_empty()
            && a.agent.contract_version() == "0.1.0"
        {
            self.err(
                format!("{f}.delegates"),
                format!(
                    "agent `{}` speaks contract 0.1.0, which has no `delegate`; rebuild it with a 0.2.0 SDK",
                    s.agent
                ),
            );
        }
        let ranges = [
            ("max_delegations", s.max_delegations, MAX_DELEGATIONS),
            ("delegation_depth", s.delegation_depth, MAX_DELEGATION_DEPTH),
        ];
        for (name, value, max) in ranges {
            if let Some(n) = value {
                if n == 0 || n > max {
                    self.err(
                        format!("{f}.{name}"),
                        format!("must be between 1 and {max}"),
                    );
                } else if s.delegates.is_empty() {
                    self.err(
                        format!("{f}.{name}"),
                        format!("`{name}` only applies with `delegates`"),
                    );
                }
            }
        }
    }

    fn known_agent(&mut self, c: &StepCheck<'_>, field: String, name: &str) {
        if !c.def.agents.contains_key(name) {
            let known: Vec<&str> = c.def.agents.keys().map(String::as_str).collect();
            self.err(
                field,
                format!(
                    "unknown agent `{name}`; the file declares: {}",
                    known.join(", ")
                ),
            );
        }
    }

    /// A reference to step `id` from `field`: a dependency, if it exists.
    fn step_ref(&mut self, c: &mut StepCheck<'_>, field: &str, id: &str) {
        match c.ids.get(id) {
            Some(&j) if j == c.i => self.err(
                field.to_owned(),
                format!("step `{}` cannot depend on itself", c.s.id),
            ),
            Some(&j) => {
                c.deps.insert(j);
            }
            None => {
                let mut known: Vec<&str> = c.def.steps.iter().map(|s| s.id.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                self.err(
                    field.to_owned(),
                    format!("unknown step `{id}`; the steps are: {}", known.join(", ")),
                );
            }
        }
    }

    /// `cache`: `None` off, `Some(None)` forever, `Some(Some(ttl))`.
    fn cache(&mut self, f: &str, cache: Option<&CacheDef>) -> Option<Option<std::time::Duration>> {
        match cache {
            None | Some(CacheDef::Enabled(false)) => None,
            Some(CacheDef::Enabled(true)) => Some(None),
            Some(CacheDef::Ttl { ttl }) => {
                self.duration(&format!("{f}.cache.ttl"), ttl.0, MAX_CACHE_TTL);
                Some(Some(ttl.0))
            }
        }
    }

    fn step_input(&mut self, c: &mut StepCheck<'_>) -> Option<Template> {
        let f = c.f.clone();
        let input = self.template(&format!("{f}.input"), &c.s.input);
        if let Some(t) = &input {
            for placed in t.references() {
                let field = format!("{f}.input{}", dotted(&placed.at));
                match &placed.reference.source {
                    Source::Param(name) => self.param_ref(&field, name, c.def),
                    Source::Step(id) => self.step_ref(c, &field, id),
                    Source::Item if c.s.for_each.is_none() => self.err(
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
        input
    }

    fn when(&mut self, c: &mut StepCheck<'_>) -> Option<Condition> {
        let field = format!("{}.when", c.f);
        let when =
            c.s.when
                .as_ref()
                .and_then(|w| self.condition(&field, w, &["params", "steps"]));
        if let Some(cond) = &when {
            for id in cond.steps() {
                self.step_ref(c, &field, id);
            }
        }
        when
    }

    /// `for_each` with its `max_items` and `max_concurrency`.
    fn for_each(&mut self, c: &mut StepCheck<'_>) -> Option<ForEach> {
        let (f, s) = (c.f.clone(), c.s);
        let for_each = s.for_each.as_ref().and_then(|text| {
            let field = format!("{f}.for_each");
            match Reference::parse(text) {
                Ok(Parsed::Ref(r)) => {
                    match &r.source {
                        Source::Param(name) => self.param_ref(&field, name, c.def),
                        Source::Step(id) => self.step_ref(c, &field, id),
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
                        max_concurrency: s.max_concurrency.unwrap_or(c.def.budget.max_concurrency).max(1),
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
        for_each
    }

    /// A quality gate: the critic, its input, `until` and the iteration bound.
    fn repeat(&mut self, c: &mut StepCheck<'_>) -> Option<Repeat> {
        let (f, s) = (c.f.clone(), c.s);
        let repeat = s.repeat.as_ref().and_then(|r| {
            self.known_agent(c, format!("{f}.repeat.critic.agent"), &r.critic.agent);
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
                    Source::Param(name) => self.param_ref(&field, name, c.def),
                    Source::Step(id) => self.step_ref(c, &field, id),
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
        repeat
    }

    /// `join` against the dependencies the step ended up with.
    fn join(&mut self, c: &StepCheck<'_>) {
        let (f, s) = (&c.f, c.s);
        if s.join != Join::All && c.deps.is_empty() {
            self.err(
                format!("{f}.join"),
                format!("`join` needs dependencies; step `{}` has none", s.id),
            );
        } else if let Join::AtLeast(n) = s.join
            && (n == 0 || n as usize > c.deps.len())
        {
            self.err(
                format!("{f}.join"),
                format!(
                    "`at_least: {n}` needs between 1 and {} dependencies",
                    c.deps.len()
                ),
            );
        }
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
            ("tokens", s.tokens.is_some()),
            ("delegates", !s.delegates.is_empty()),
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
        // Untrusted like an agent's: bounded before it is compiled.
        let compiled = corral_runtime::schema::bounded(&schema)
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
        let approval = Approval {
            prompt: a.prompt.clone(),
            schema,
            validator,
            timeout: a.timeout.map(|t| t.0),
            default: self.approval_default(f, a),
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

    /// `timeout`, `on_timeout` and `default` of an approval, which go together.
    fn approval_default(&mut self, f: &str, a: &ApprovalDef) -> Option<Value> {
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
        default
    }

    pub(super) fn params(&mut self, src: &WorkflowSource) {
        for (name, p) in &src.def.params {
            if !valid_id(name) {
                self.err(
                    format!("params.{name}"),
                    format!("`{name}` is not a valid name: use letters, digits, `_` and `-`"),
                );
            }
            self.artifact_param(name, p);
            if let Some(d) = &p.default
                && p.ty != ParamType::Artifact
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

    /// An artifact param names a file given at the start of each run, so
    /// it has no default; only it has a media type.
    fn artifact_param(&mut self, name: &str, p: &ParamDef) {
        if p.ty == ParamType::Artifact && p.default.is_some() {
            self.err(
                format!("params.{name}.default"),
                format!(
                    "an artifact param has no default (a new run holds no artifacts): remove it, and pass `--param {name}=FILE`"
                ),
            );
        }
        match &p.media_type {
            Some(_) if p.ty != ParamType::Artifact => self.err(
                format!("params.{name}.media_type"),
                format!(
                    "only a param of `type: artifact` has a media type; this one is {}",
                    p.ty.name()
                ),
            ),
            Some(m) if !corral_runtime::artifact::is_media_type(m) => self.err(
                format!("params.{name}.media_type"),
                format!("`{m}` is not a media type: write `type/subtype`, such as `text/plain`"),
            ),
            _ => {}
        }
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
        let compiled = self.conditions.get(source).cloned();
        match compiled.unwrap_or_else(|| Condition::compile(source)) {
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
                self.err(field.to_owned(), e.to_string());
                None
            }
        }
    }

    fn param_ref(&mut self, field: &str, name: &str, def: &WorkflowDef) {
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

    pub(super) fn outputs(
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
}
