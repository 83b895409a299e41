//! Typed edges: walking JSON Schemas along reference paths and checking that a producer's type fits the consumer's.

use std::collections::BTreeSet;

use serde_json::Value;

use super::reference::Seg;

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
    /// The schema does not constrain the child.
    Any,
    /// The schema forbids the child.
    Absent,
}

/// JSON types a schema admits; `None` means any.
pub type Types = Option<BTreeSet<String>>;

impl<'a> SchemaAt<'a> {
    pub fn root(root: &'a Value) -> Self {
        Self { root, node: root }
    }

    /// Follows local `$ref`s (`#/$defs/..`, `#/definitions/..`).
    fn resolved(self) -> Self {
        let mut node = self.node;
        for _ in 0..32 {
            let Some(r) = node.get("$ref").and_then(Value::as_str) else {
                break;
            };
            match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                Some(target) => node = target,
                None => break,
            }
        }
        Self {
            root: self.root,
            node,
        }
    }

    /// Branches of `anyOf`/`oneOf`/`allOf` other than a bare `null`.
    fn branches(self) -> Vec<SchemaAt<'a>> {
        let mut out = Vec::new();
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = self.node.get(key).and_then(Value::as_array) {
                for b in list {
                    if b.get("type").and_then(Value::as_str) != Some("null") {
                        out.push(
                            SchemaAt {
                                root: self.root,
                                node: b,
                            }
                            .resolved(),
                        );
                    }
                }
            }
        }
        out
    }

    /// The schema of a child as a consumer sees it: an object without
    /// `additionalProperties` accepts unknown fields.
    pub fn child(self, seg: &Seg) -> Child<'a> {
        self.child_in(seg, false)
    }

    /// With `produced`, the schema describes what an agent returns: a field
    /// it does not declare is absent, whatever `additionalProperties` says.
    fn child_in(self, seg: &Seg, produced: bool) -> Child<'a> {
        let s = self.resolved();
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
                match b.child_in(seg, produced) {
                    Child::Known(k) => return Child::Known(k),
                    Child::Any => any = true,
                    Child::Absent => {}
                }
            }
            return if any { Child::Any } else { Child::Absent };
        }
        let at = |node: &'a Value| Child::Known(SchemaAt { root: s.root, node }.resolved());
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
                    _ if s.types().is_some_and(|t| !t.contains("object")) => Child::Absent,
                    _ => Child::Any,
                }
            }
            // A numeric segment on an object schema is a key that looks like a number.
            Seg::Index(i)
                if s.node.get("properties").is_some()
                    || s.node.get("additionalProperties").is_some() =>
            {
                s.child_in(&Seg::Key(i.to_string()), produced)
            }
            Seg::Index(i) => {
                if let Some(p) = s.node.get("prefixItems").and_then(|p| p.get(*i)) {
                    return at(p);
                }
                match s.node.get("items") {
                    Some(schema @ Value::Object(_)) => at(schema),
                    _ if s.types().is_some_and(|t| !t.contains("array")) => Child::Absent,
                    _ => Child::Any,
                }
            }
        }
    }

    /// The JSON types the schema admits.
    pub fn types(self) -> Types {
        let s = self.resolved();
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
        let values = s
            .node
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| s.node.get("const").map(|c| vec![c.clone()]));
        if let Some(values) = values {
            return Some(values.iter().map(|v| json_type(v).to_owned()).collect());
        }
        let mut union = BTreeSet::new();
        let mut any_branch = false;
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = s.node.get(key).and_then(Value::as_array) {
                for b in list {
                    any_branch = true;
                    union.extend(
                        SchemaAt {
                            root: s.root,
                            node: b,
                        }
                        .types()?,
                    );
                }
            }
        }
        if any_branch { Some(union) } else { None }
    }

    /// Fields the schema requires, when it is an object schema.
    pub fn required(self) -> Vec<String> {
        let s = self.resolved();
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
        let s = self.resolved();
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
            match at.child_in(seg, produced) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
