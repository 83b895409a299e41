//! Typed edges: walking JSON Schemas along reference paths, and checking that every producer's type fits its consumer's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::super::model::{Step, WorkflowAgent};
use super::super::reference::{Reference, Seg, Source, Template};
use super::super::source::WorkflowSource;
use super::{Validator, dotted};

/// A place inside a schema document, with the root its `$ref`s resolve against.
#[derive(Clone, Copy)]
pub struct SchemaAt<'a> {
    root: &'a Value,
    node: &'a Value,
}

/// What a schema says about a child.
pub enum Child<'a> {
    /// The child has this schema.
    Known(SchemaAt<'a>),
    /// The schema does not constrain the child, or is too tangled to tell.
    Any,
    /// The schema forbids the child.
    Absent,
}

/// JSON types a schema admits; `None` means any.
pub type Types = Option<BTreeSet<String>>;

/// `$ref`s followed in a row before a chain counts as a cycle.
const MAX_REF_HOPS: usize = 32;
/// Schemas nested inside one another (through `anyOf`, `oneOf`, `allOf`)
/// one question may descend into.
const MAX_WALK_DEPTH: usize = 64;
/// Schema nodes one question may look at in all, so that branches which
/// share `$ref` targets cannot make a walk exponential.
const MAX_WALK_NODES: usize = 10_000;

/// The bounds of one walk. Agent schemas are untrusted: a schema that
/// refers to itself, nests absurdly or fans out without end is not
/// reasoned about. It is treated as opaque (any type, any child), so the
/// static edge check says nothing about it and the handoff check at run
/// time, which validates the actual packet, decides.
#[derive(Default)]
struct Walk {
    /// Nodes being expanded right now: meeting one again is a cycle.
    open: Vec<*const Value>,
    seen: usize,
}

impl Walk {
    /// Enters `node`, or `false` when the walk must treat it as opaque.
    fn enter(&mut self, node: &Value) -> bool {
        let ptr = node as *const Value;
        if self.open.len() >= MAX_WALK_DEPTH
            || self.seen >= MAX_WALK_NODES
            || self.open.contains(&ptr)
        {
            return false;
        }
        self.seen += 1;
        self.open.push(ptr);
        true
    }

    fn leave(&mut self) {
        self.open.pop();
    }
}

impl<'a> SchemaAt<'a> {
    pub fn root(root: &'a Value) -> Self {
        Self { root, node: root }
    }

    fn at(self, node: &'a Value) -> Self {
        Self {
            root: self.root,
            node,
        }
    }

    /// Follows local `$ref`s (`#/$defs/..`, `#/definitions/..`); `None`
    /// when the chain does not end (a cycle of bare `$ref`s).
    fn resolved(self) -> Option<Self> {
        let mut node = self.node;
        for _ in 0..MAX_REF_HOPS {
            let Some(r) = node.get("$ref").and_then(Value::as_str) else {
                return Some(self.at(node));
            };
            match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                Some(target) => node = target,
                // Not a local reference: nothing to follow.
                None => return Some(self.at(node)),
            }
        }
        None
    }

    /// Branches of `anyOf`/`oneOf`/`allOf` other than a bare `null`, unresolved.
    fn branches(self) -> Vec<SchemaAt<'a>> {
        let mut out = Vec::new();
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = self.node.get(key).and_then(Value::as_array) {
                for b in list {
                    if b.get("type").and_then(Value::as_str) != Some("null") {
                        out.push(self.at(b));
                    }
                }
            }
        }
        out
    }

    /// The schema of a child as a consumer sees it: an object without
    /// `additionalProperties` accepts unknown fields.
    pub fn child(self, seg: &Seg) -> Child<'a> {
        self.child_in(seg, false, &mut Walk::default())
    }

    /// With `produced`, the schema describes what an agent returns: a field
    /// it does not declare is absent, whatever `additionalProperties` says.
    fn child_in(self, seg: &Seg, produced: bool, walk: &mut Walk) -> Child<'a> {
        let Some(s) = self.resolved() else {
            return Child::Any;
        };
        if !walk.enter(s.node) {
            return Child::Any;
        }
        let child = s.child_here(seg, produced, walk);
        walk.leave();
        child
    }

    /// [`Self::child_in`] on a resolved node the walk has entered.
    fn child_here(self, seg: &Seg, produced: bool, walk: &mut Walk) -> Child<'a> {
        let s = self;
        if s.node == &Value::Bool(true) {
            return Child::Any;
        }
        if s.node == &Value::Bool(false) {
            return Child::Absent;
        }
        let branches = s.branches();
        if !branches.is_empty() {
            let mut any = false;
            for b in branches {
                match b.child_in(seg, produced, walk) {
                    Child::Known(k) => return Child::Known(k),
                    Child::Any => any = true,
                    Child::Absent => {}
                }
            }
            return if any { Child::Any } else { Child::Absent };
        }
        let at = |node: &'a Value| match s.at(node).resolved() {
            Some(k) => Child::Known(k),
            None => Child::Any,
        };
        match seg {
            Seg::Key(k) => {
                if let Some(p) = s.node.get("properties").and_then(|p| p.get(k)) {
                    return at(p);
                }
                match s.node.get("additionalProperties") {
                    Some(Value::Bool(false)) => Child::Absent,
                    Some(schema @ Value::Object(_)) => at(schema),
                    _ if produced && s.node.get("properties").is_some() => Child::Absent,
                    _ if s.node.get("properties").is_some() && has_type(s.node, "object") => {
                        Child::Any
                    }
                    _ if s.types_in(walk).is_some_and(|t| !t.contains("object")) => Child::Absent,
                    _ => Child::Any,
                }
            }
            // A numeric segment on an object schema is a key that looks like a number.
            Seg::Index(i)
                if s.node.get("properties").is_some()
                    || s.node.get("additionalProperties").is_some() =>
            {
                s.child_here(&Seg::Key(i.to_string()), produced, walk)
            }
            Seg::Index(i) => {
                if let Some(p) = s.node.get("prefixItems").and_then(|p| p.get(*i)) {
                    return at(p);
                }
                match s.node.get("items") {
                    Some(schema @ Value::Object(_)) => at(schema),
                    _ if s.types_in(walk).is_some_and(|t| !t.contains("array")) => Child::Absent,
                    _ => Child::Any,
                }
            }
        }
    }

    /// The JSON types the schema admits.
    pub fn types(self) -> Types {
        self.types_in(&mut Walk::default())
    }

    fn types_in(self, walk: &mut Walk) -> Types {
        let s = self.resolved()?;
        if !walk.enter(s.node) {
            return None;
        }
        let types = s.types_here(walk);
        walk.leave();
        types
    }

    fn types_here(self, walk: &mut Walk) -> Types {
        let s = self;
        if let Some(t) = s.node.get("type") {
            let mut set = BTreeSet::new();
            match t {
                Value::String(t) => {
                    set.insert(t.clone());
                }
                Value::Array(ts) => {
                    set.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => return None,
            }
            return Some(set);
        }
        if let Some(values) = s.node.get("enum").and_then(Value::as_array) {
            return Some(values.iter().map(|v| json_type(v).to_owned()).collect());
        }
        if let Some(c) = s.node.get("const") {
            return Some(BTreeSet::from([json_type(c).to_owned()]));
        }
        let mut union = BTreeSet::new();
        let mut any_branch = false;
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = s.node.get(key).and_then(Value::as_array) {
                for b in list {
                    any_branch = true;
                    union.extend(s.at(b).types_in(walk)?);
                }
            }
        }
        if any_branch { Some(union) } else { None }
    }

    /// Fields the schema requires, when it is an object schema.
    pub fn required(self) -> Vec<String> {
        let Some(s) = self.resolved() else {
            return Vec::new();
        };
        s.node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Property names of an object schema.
    pub fn property_names(self) -> Vec<String> {
        let Some(s) = self.resolved() else {
            return Vec::new();
        };
        s.node
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Walks a whole path into an input schema.
    pub fn walk(self, path: &[Seg]) -> Child<'a> {
        self.walk_in(path, false)
    }

    /// Walks a whole path into an output schema (see [`Self::child_in`]).
    pub fn walk_produced(self, path: &[Seg]) -> Child<'a> {
        self.walk_in(path, true)
    }

    fn walk_in(self, path: &[Seg], produced: bool) -> Child<'a> {
        let mut at = self;
        for seg in path {
            match at.child_in(seg, produced, &mut Walk::default()) {
                Child::Known(next) => at = next,
                other => return other,
            }
        }
        Child::Known(at)
    }
}

fn has_type(node: &Value, t: &str) -> bool {
    match node.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|v| v == t),
        _ => false,
    }
}

/// The JSON type name of a value.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks that every type the producer may give is accepted by the consumer.
/// `null` from the producer is not held against it: optional outputs are
/// common and are caught, if at all, by the handoff check at run time.
pub fn fits(producer: &Types, consumer: &Types) -> Result<(), String> {
    let (Some(p), Some(c)) = (producer, consumer) else {
        return Ok(());
    };
    let bad: Vec<&String> = p
        .iter()
        .filter(|t| *t != "null")
        .filter(|t| !(c.contains(*t) || (*t == "integer" && c.contains("number"))))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "gives {} but the input there takes {}",
        list(p),
        list(c)
    ))
}

pub fn list(types: &BTreeSet<String>) -> String {
    types.iter().cloned().collect::<Vec<_>>().join(" or ")
}

impl Validator<'_> {
    /// Checks every edge of every step.
    pub(super) fn step_edges(
        &mut self,
        steps: &[Step],
        src: &WorkflowSource,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) {
        for step in steps {
            self.edges(step, steps, src, agents);
        }
    }

    /// Checks every reference of the run's outputs.
    pub(super) fn output_edges(
        &mut self,
        steps: &[Step],
        outputs: &[(String, Template)],
        src: &WorkflowSource,
        agents: &BTreeMap<String, WorkflowAgent>,
    ) {
        for (name, t) in outputs {
            for placed in t.references() {
                self.producer(
                    &format!("outputs.{name}"),
                    placed.reference,
                    None,
                    steps,
                    src,
                    agents,
                );
            }
        }
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
        self.required_fields(field, t, consumer, root);
    }

    /// Required fields of every object the template builds.
    fn required_fields(
        &mut self,
        field: &str,
        t: &Template,
        consumer: &WorkflowAgent,
        root: SchemaAt<'_>,
    ) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(key: &str, inner: Value) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(key.to_owned(), inner);
        Value::Object(m)
    }

    /// Every question a validation asks of a schema, on `schema`.
    fn ask_everything(schema: &Value) -> (bool, Types) {
        let root = SchemaAt::root(schema);
        let path = [Seg::Key("a".into()), Seg::Index(0), Seg::Key("b".into())];
        let _ = (root.required(), root.property_names());
        let known = matches!(root.walk_produced(&path), Child::Known(_));
        let _ = root.walk(&path);
        (known, root.types())
    }

    #[test]
    fn self_referring_schemas_are_opaque_not_a_stack_overflow() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"anyOf": [{"$ref": "#"}]}),
            json!({"oneOf": [{"$ref": "#"}, {"allOf": [{"$ref": "#"}]}]}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"oneOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
            json!({"properties": {"a": {"items": {"anyOf": [{"$ref": "#"}]}}}}),
        ] {
            let (_, types) = ask_everything(&schema);
            assert_eq!(types, None, "{schema}");
        }
        // A recursive schema that does say something is still read.
        let tree = json!({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}, "n": {"type": "integer"}}});
        let Child::Known(n) = SchemaAt::root(&tree).walk(&[
            Seg::Key("kids".into()),
            Seg::Index(3),
            Seg::Key("kids".into()),
            Seg::Index(0),
            Seg::Key("n".into()),
        ]) else {
            panic!()
        };
        assert_eq!(n.types(), Some(BTreeSet::from(["integer".to_owned()])));
    }

    #[test]
    fn deep_wide_and_exponential_schemas_are_opaque() {
        let deep = (0..10_000).fold(json!({"type": "string"}), |v, _| {
            obj("anyOf", Value::Array(vec![v, json!({"type": "null"})]))
        });
        assert_eq!(ask_everything(&deep).1, None);
        std::mem::forget(deep);
        let wide: Vec<Value> = (0..100_000).map(|i| json!({"const": i})).collect();
        let wide = json!({"anyOf": wide});
        // More branches than one walk looks at: opaque too.
        assert_eq!(ask_everything(&wide).1, None);
        let mut defs = serde_json::Map::new();
        for i in 0..40 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert("d40".into(), json!({"type": "string"}));
        let exponential = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        assert_eq!(ask_everything(&exponential).1, None);
    }

    #[test]
    fn walks_refs_options_and_arrays() {
        let schema = json!({
            "type": "object",
            "properties": {
                "keywords": {"type": "array", "items": {"$ref": "#/$defs/Keyword"}},
                "label": {"type": ["string", "null"]},
                "nested": {"anyOf": [{"$ref": "#/$defs/Keyword"}, {"type": "null"}]}
            },
            "additionalProperties": false,
            "$defs": {"Keyword": {"type": "object", "properties": {"count": {"type": "integer"}}}}
        });
        let root = SchemaAt::root(&schema);
        let path = [
            Seg::Key("keywords".into()),
            Seg::Index(0),
            Seg::Key("count".into()),
        ];
        let Child::Known(at) = root.walk(&path) else {
            panic!()
        };
        assert_eq!(at.types(), Some(BTreeSet::from(["integer".to_owned()])));
        let Child::Known(at) = root.walk(&[Seg::Key("nested".into()), Seg::Key("count".into())])
        else {
            panic!()
        };
        assert!(at.types().unwrap().contains("integer"));
        assert!(matches!(
            root.child(&Seg::Key("missing".into())),
            Child::Absent
        ));
        let Child::Known(label) = root.child(&Seg::Key("label".into())) else {
            panic!()
        };
        let number = Some(BTreeSet::from(["number".to_owned()]));
        assert!(fits(&label.types(), &number).is_err());
        let int = Some(BTreeSet::from(["integer".to_owned()]));
        assert!(fits(&int, &number).is_ok());
    }
}
