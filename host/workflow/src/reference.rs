//! References inside step inputs (`$params.x`, `$steps.a.output.path`, `$item`, `$output`) and the templates built from them.

use serde_json::{Map, Value};

/// One segment of a path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "{k}"),
            Seg::Index(i) => write!(f, "{i}"),
        }
    }
}

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Param(String),
    Step(String),
    /// The current element of `for_each`.
    Item,
    /// The output of the current iteration, inside a quality gate's critic input.
    Output,
}

/// A parsed reference such as `$steps.summarize.output.sentences.0.text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub source: Source,
    pub path: Vec<Seg>,
    /// The reference as written.
    pub text: String,
}

/// A string that is not a reference, or a reference, or a malformed one.
#[derive(Debug)]
pub enum Parsed {
    Literal(String),
    Ref(Reference),
}

impl Reference {
    /// Parses `text`. Strings not starting with `$` are literals; `$$x` is the literal `$x`.
    pub fn parse(text: &str) -> Result<Parsed, String> {
        let Some(body) = text.strip_prefix('$') else {
            return Ok(Parsed::Literal(text.to_owned()));
        };
        if let Some(lit) = body.strip_prefix('$') {
            return Ok(Parsed::Literal(format!("${lit}")));
        }
        let mut parts = body.split('.');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| p.is_empty()) {
            return Err(format!("`{text}` has an empty path segment"));
        }
        let to_path = |segs: &[&str]| -> Vec<Seg> {
            segs.iter()
                .map(|s| {
                    s.parse::<usize>()
                        .map(Seg::Index)
                        .unwrap_or_else(|_| Seg::Key((*s).to_owned()))
                })
                .collect()
        };
        let (source, path) = match head {
            "params" => match rest.split_first() {
                Some((name, segs)) => (Source::Param((*name).to_owned()), to_path(segs)),
                None => return Err(format!("`{text}` names no param: write `$params.<name>`")),
            },
            "steps" => match rest.as_slice() {
                [id, "output", segs @ ..] => (Source::Step((*id).to_owned()), to_path(segs)),
                [id] | [id, ..] => {
                    return Err(format!(
                        "`{text}` must continue with `.output`: write `$steps.{id}.output` or `$steps.{id}.output.<field>`"
                    ));
                }
                [] => {
                    return Err(format!(
                        "`{text}` names no step: write `$steps.<id>.output`"
                    ));
                }
            },
            "item" => (Source::Item, to_path(&rest)),
            "output" => (Source::Output, to_path(&rest)),
            other => {
                return Err(format!(
                    "`{text}` starts with `${other}`; references start with `$params.`, `$steps.`, `$item` or `$output` (write `$$` for a literal `$`)"
                ));
            }
        };
        Ok(Parsed::Ref(Reference {
            source,
            path,
            text: text.to_owned(),
        }))
    }

    /// Follows the path into `value`; `None` when it leads nowhere.
    pub fn follow<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for seg in &self.path {
            value = match (seg, value) {
                (Seg::Key(k), Value::Object(o)) => o.get(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
                (Seg::Index(i), Value::Object(o)) => o.get(&i.to_string())?,
                _ => return None,
            };
        }
        Some(value)
    }
}

/// A step input with its references parsed once, resolved per call.
#[derive(Debug, Clone)]
pub enum Template {
    Literal(Value),
    Ref(Reference),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

/// A reference inside a template, with where it sits in the input.
#[derive(Debug, Clone)]
pub struct Placed<'t> {
    /// Path inside the input, such as `["rules", "required_terms"]`.
    pub at: Vec<String>,
    pub reference: &'t Reference,
}

impl Template {
    /// Parses every string of `value`; errors carry the path inside `value`.
    pub fn compile(value: &Value) -> Result<Template, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let t = Self::compile_at(value, "", &mut errors);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    fn compile_at(value: &Value, at: &str, errors: &mut Vec<(String, String)>) -> Template {
        match value {
            Value::String(s) => match Reference::parse(s) {
                Ok(Parsed::Literal(l)) => Template::Literal(Value::String(l)),
                Ok(Parsed::Ref(r)) => Template::Ref(r),
                Err(e) => {
                    errors.push((at.to_owned(), e));
                    Template::Literal(Value::Null)
                }
            },
            Value::Object(o) => Template::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::compile_at(v, &format!("{at}.{k}"), errors)))
                    .collect(),
            ),
            Value::Array(a) => Template::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile_at(v, &format!("{at}[{i}]"), errors))
                    .collect(),
            ),
            other => Template::Literal(other.clone()),
        }
    }

    /// Every reference with its place in the input.
    pub fn references(&self) -> Vec<Placed<'_>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk<'t>(&'t self, at: &mut Vec<String>, out: &mut Vec<Placed<'t>>) {
        match self {
            Template::Literal(_) => {}
            Template::Ref(r) => out.push(Placed {
                at: at.clone(),
                reference: r,
            }),
            Template::Object(fields) => {
                for (k, t) in fields {
                    at.push(k.clone());
                    t.walk(at, out);
                    at.pop();
                }
            }
            Template::Array(items) => {
                for (i, t) in items.iter().enumerate() {
                    at.push(i.to_string());
                    t.walk(at, out);
                    at.pop();
                }
            }
        }
    }

    /// Builds the value, asking `lookup` for each reference's target.
    pub fn resolve(
        &self,
        lookup: &dyn Fn(&Reference) -> Result<Value, String>,
    ) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Ref(r) => lookup(r)?,
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.resolve(lookup)?);
                }
                Value::Object(map)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.resolve(lookup))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(s: &str) -> Reference {
        match Reference::parse(s).unwrap() {
            Parsed::Ref(r) => r,
            Parsed::Literal(l) => panic!("{s} parsed as literal {l}"),
        }
    }

    #[test]
    fn parses_references() {
        let r = parse("$steps.sum.output.sentences.0.text");
        assert_eq!(r.source, Source::Step("sum".into()));
        assert_eq!(
            r.path,
            vec![
                Seg::Key("sentences".into()),
                Seg::Index(0),
                Seg::Key("text".into())
            ]
        );
        assert_eq!(parse("$params.x").source, Source::Param("x".into()));
        assert_eq!(parse("$item").path, vec![]);
        assert!(matches!(Reference::parse("$$5").unwrap(), Parsed::Literal(l) if l == "$5"));
        assert!(
            Reference::parse("$steps.a")
                .unwrap_err()
                .contains("`.output`")
        );
        assert!(
            Reference::parse("$foo.bar")
                .unwrap_err()
                .contains("$params.")
        );
        assert!(Reference::parse("$params.a..b").is_err());
    }

    #[test]
    fn resolves_templates() {
        let t = Template::compile(&json!({"a": "$params.x", "b": [1, "$item.k"], "c": "plain"}))
            .unwrap();
        assert_eq!(t.references().len(), 2);
        let v = t
            .resolve(&|r| match r.source {
                Source::Param(_) => Ok(json!(5)),
                _ => Ok(r.follow(&json!({"k": "v"})).cloned().unwrap()),
            })
            .unwrap();
        assert_eq!(v, json!({"a": 5, "b": [1, "v"], "c": "plain"}));
    }
}
