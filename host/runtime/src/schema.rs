//! Compiled JSON Schemas of an agent's payloads, and violations that name the failing place.
//!
//! A schema comes from an agent (or a workflow file), so it is untrusted.
//! `jsonschema` survives `$ref` cycles, but it recurses once per level of
//! nesting (a few hundred levels overflow a 2 MiB stack) and it does not
//! memoize: `$ref`s that share targets make validation exponential. So
//! [`bounded`] refuses, before `jsonschema` sees it, a schema nested deeper
//! than [`MAX_SCHEMA_DEPTH`], one that grows past [`MAX_SCHEMA_NODES`] with
//! its `$ref`s expanded, and one with a reference the host cannot follow.

use std::collections::HashMap;

use jsonschema::Validator;
use serde_json::Value;

use crate::error::PacketProblem;

/// One side of an agent's contract, compiled once at load.
pub struct PayloadSchema {
    source: Value,
    validator: Validator,
}

impl PayloadSchema {
    /// Compiles `source`; the error says why the schema itself is invalid.
    pub fn compile(source: Value) -> Result<Self, String> {
        bounded(&source)?;
        let validator = jsonschema::validator_for(&source).map_err(|e| e.to_string())?;
        Ok(Self { source, validator })
    }

    /// The schema as the agent declared it.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Checks `payload`, reporting the first violation with its JSON Pointer.
    pub fn check(&self, payload: &Value) -> Result<(), PacketProblem> {
        // `is_valid` skips error construction on the hot, valid path.
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let err = match self.validator.validate(payload) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        Err(PacketProblem::Schema {
            pointer: err.instance_path().to_string(),
            keyword: err.kind().keyword().to_owned(),
            schema_path: err.schema_path().to_string(),
            message: err.to_string(),
        })
    }
}

/// Nesting a schema may have: objects and arrays, and `$ref` hops, together.
pub const MAX_SCHEMA_DEPTH: usize = 128;
/// Subschemas a schema may have with every `$ref` expanded (a `$ref` back
/// to a schema being expanded counts once: validation follows such a cycle
/// only as deep as the instance goes).
pub const MAX_SCHEMA_NODES: u64 = 20_000;

/// Keywords whose values are data, not schemas: never walked.
const DATA_KEYWORDS: &[&str] = &["const", "default", "enum", "examples"];

/// Checks that `schema` is one the host can compile and validate against
/// in bounded stack and time; the error says what to simplify.
pub fn bounded(schema: &Value) -> Result<(), String> {
    let mut walk = Expansion {
        root: schema,
        open: Vec::new(),
        sizes: HashMap::new(),
    };
    walk.size(schema, 0).map(|_| ())
}

/// Sizes of subschemas with their `$ref`s expanded, computed once per target.
struct Expansion<'a> {
    root: &'a Value,
    /// `$ref` targets being expanded right now.
    open: Vec<*const Value>,
    sizes: HashMap<*const Value, u64>,
}

impl<'a> Expansion<'a> {
    fn size(&mut self, v: &'a Value, depth: usize) -> Result<u64, String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests more than {MAX_SCHEMA_DEPTH} levels deep (objects, arrays and `$ref`s together); flatten it"
            ));
        }
        let mut n: u64 = 1;
        match v {
            Value::Object(m) => {
                for keyword in ["$dynamicRef", "$recursiveRef"] {
                    if m.get(keyword).is_some_and(Value::is_string) {
                        return Err(format!(
                            "`{keyword}` is not supported; use a `$ref` such as `#/$defs/Name`"
                        ));
                    }
                }
                // A nested `$id` moves the base `$ref`s resolve against.
                if !std::ptr::eq(v, self.root) && m.get("$id").is_some_and(Value::is_string) {
                    return Err(
                        "`$id` is only supported at the schema's root; refer to definitions with `#/$defs/Name`"
                            .into(),
                    );
                }
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    n = n.saturating_add(self.reference(r, depth)?);
                }
                for (k, child) in m {
                    if !DATA_KEYWORDS.contains(&k.as_str()) {
                        n = n.saturating_add(self.size(child, depth + 1)?);
                    }
                }
            }
            Value::Array(items) => {
                for child in items {
                    n = n.saturating_add(self.size(child, depth + 1)?);
                }
            }
            _ => {}
        }
        if n > MAX_SCHEMA_NODES {
            return Err(format!(
                "the schema is too large: with its `$ref`s expanded it has more than {MAX_SCHEMA_NODES} subschemas"
            ));
        }
        Ok(n)
    }

    fn reference(&mut self, r: &str, depth: usize) -> Result<u64, String> {
        let target = r
            .strip_prefix('#')
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .and_then(|p| self.root.pointer(p))
            .ok_or_else(|| {
                format!(
                    "`$ref: {r}` is not a JSON Pointer into this schema, such as `#/$defs/Name`; the host follows only those"
                )
            })?;
        let key = target as *const Value;
        if self.open.contains(&key) {
            return Ok(1);
        }
        if let Some(&n) = self.sizes.get(&key) {
            return Ok(n);
        }
        self.open.push(key);
        let n = self.size(target, depth + 1);
        self.open.pop();
        let n = n?;
        self.sizes.insert(key, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// `levels` of `wrap` around a string schema, built without recursion.
    fn nested(levels: usize, wrap: impl Fn(Value) -> Value) -> Value {
        (0..levels).fold(json!({"type": "string"}), |v, _| wrap(v))
    }

    /// `{key: inner}`, without `json!`, which would copy `inner` recursively.
    fn obj(key: &str, inner: Value) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(key.to_owned(), inner);
        Value::Object(m)
    }

    /// `n` definitions, each an `anyOf` of two `$ref`s to the next:
    /// 2^n paths from the root.
    fn doubling(n: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..n {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert(format!("d{n}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    /// A chain of `n` definitions, each only a `$ref` to the next.
    fn chain(n: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..n {
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": format!("#/$defs/d{}", i + 1)}]}),
            );
        }
        defs.insert(format!("d{n}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    fn refused(schema: Value) -> String {
        let e = bounded(&schema).expect_err("refused");
        // Dropping a value nested 10,000 deep would recurse as deep.
        std::mem::forget(schema);
        e
    }

    #[test]
    fn cycles_compile_and_validate() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"anyOf": [{"$ref": "#"}, {"type": "integer"}]}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
            json!({"type": "object", "properties": {"next": {"$ref": "#"}, "v": {"type": "integer"}}}),
        ] {
            let s =
                PayloadSchema::compile(schema.clone()).unwrap_or_else(|e| panic!("{schema}: {e}"));
            let _ = s.check(&json!({"next": {"next": {"v": "x"}}, "v": 1}));
            let _ = s.check(&json!(1));
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_jsonschema_sees_it() {
        let wraps: [fn(Value) -> Value; 4] = [
            |v| obj("properties", obj("a", v)),
            |v| obj("anyOf", Value::Array(vec![v, json!({"type": "null"})])),
            |v| obj("not", obj("not", v)),
            |v| obj("items", v),
        ];
        for wrap in wraps {
            let e = refused(nested(10_000, wrap));
            assert!(e.contains("more than 128 levels"), "{e}");
        }
        let e = refused(chain(200));
        assert!(e.contains("more than 128 levels"), "{e}");
    }

    #[test]
    fn exponential_and_huge_schemas_are_refused() {
        let e = PayloadSchema::compile(doubling(40)).err().expect("refused");
        assert!(e.contains("more than 20000 subschemas"), "{e}");
        let branches: Vec<Value> = (0..100_000).map(|i| json!({"const": i})).collect();
        let e = refused(json!({"anyOf": branches}));
        assert!(e.contains("more than 20000 subschemas"), "{e}");
    }

    #[test]
    fn references_the_host_cannot_follow_are_refused() {
        for (schema, says) in [
            (
                json!({"$ref": "#A", "$defs": {"a": {"$anchor": "A"}}}),
                "not a JSON Pointer",
            ),
            (json!({"$ref": "other.json"}), "not a JSON Pointer"),
            (json!({"$ref": "#/$defs/missing"}), "not a JSON Pointer"),
            (
                json!({"$dynamicRef": "#meta"}),
                "`$dynamicRef` is not supported",
            ),
            (
                json!({"properties": {"a": {"$id": "http://x/", "$ref": "#/b"}}}),
                "`$id` is only supported",
            ),
        ] {
            let e = refused(schema);
            assert!(e.contains(says), "{e}");
        }
        // Data that looks like a reference is data.
        assert!(
            bounded(&json!({"const": {"$ref": "#A"}, "properties": {"$ref": {"type": "string"}}}))
                .is_ok()
        );
    }

    /// How deep `jsonschema` can go before it overflows (run by hand:
    /// `cargo test -p corral --lib schema::tests::probe -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn probe() {
        for levels in [100usize, 200, 400, 800, 1600, 3200, 10_000] {
            for (name, wrap) in [
                (
                    "properties",
                    (|v| obj("properties", obj("a", v))) as fn(Value) -> Value,
                ),
                ("not", |v| obj("not", v)),
                ("anyOf", |v| obj("anyOf", Value::Array(vec![v]))),
            ] {
                let s = nested(levels, wrap);
                eprintln!("{name} x{levels}");
                if let Ok(v) = jsonschema::validator_for(&s) {
                    eprintln!("  compiled; valid: {}", v.is_valid(&json!(1)));
                }
                std::mem::forget(s);
            }
        }
    }

    /// What the bounds let through, `jsonschema` survives, on a test
    /// thread's 2 MiB stack, in a debug build.
    #[test]
    fn jsonschema_survives_everything_the_bounds_let_through() {
        let deepest = [
            nested(MAX_SCHEMA_DEPTH / 2 - 1, |v| obj("properties", obj("a", v))),
            nested(MAX_SCHEMA_DEPTH / 2 - 1, |v| obj("not", obj("not", v))),
            nested(MAX_SCHEMA_DEPTH - 1, |v| obj("items", v)),
            chain(MAX_SCHEMA_DEPTH / 3 - 1),
            doubling(8),
        ];
        let mut instance = json!("leaf");
        for _ in 0..32 {
            instance = obj("a", Value::Array(vec![instance]));
        }
        for schema in deepest {
            let s = PayloadSchema::compile(schema).unwrap();
            let _ = s.check(&instance);
            let _ = s.check(&json!(1));
        }
    }
}
