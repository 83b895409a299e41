//! The activation of one evaluation: CEL values for only the paths the expression reads, borrowing strings from the JSON, within a cap on how many values it exposes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value;

use super::MAX_VALUES;
use super::reads::{Key, Reads};

/// Looks a step up by id: its status (`"completed"`, ...) and its output.
pub type StepLookup<'a> = dyn Fn(&str) -> Option<(Value, Option<&'a Value>)> + 'a;

/// Where a variable's value comes from. The data stays where the caller
/// keeps it: nothing is copied before the expression's paths are known.
#[derive(Clone, Copy)]
pub enum Binding<'a> {
    /// A JSON value, such as `params` or a critic's verdict.
    Json(&'a Value),
    /// `steps`: `steps.<id>.status` and `steps.<id>.output`, looked up by id.
    Steps(&'a StepLookup<'a>),
}

type Boxed<'v> = Box<dyn Val + 'v>;

/// What one activation converted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    pub values: u64,
}

/// The CEL values of the variables the expression reads, or the path at
/// which the cap on exposed values was crossed.
pub fn build<'v>(
    reads: &BTreeMap<String, Reads>,
    step_ids: &BTreeSet<String>,
    vars: &[(&str, Binding<'v>)],
) -> Result<(Vec<(String, Boxed<'v>)>, Converted), String> {
    let mut c = Converter::default();
    let mut out = Vec::new();
    for (name, binding) in vars {
        let Some(r) = reads.get(*name) else {
            continue;
        };
        let value = match binding {
            Binding::Json(v) => c.json(v, r, &mut vec![name.to_string()])?,
            Binding::Steps(lookup) => c.steps(lookup, r, step_ids)?,
        };
        out.push((name.to_string(), value));
    }
    Ok((out, Converted { values: c.values }))
}

#[derive(Default)]
struct Converter {
    values: u64,
}

impl Converter {
    fn count(&mut self, at: &[String]) -> Result<(), String> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(at.join("."));
        }
        Ok(())
    }

    /// `steps`, with only the ids (and of those, the fields) it reads. A
    /// `steps` read whole exposes the ids the expression names.
    fn steps<'v>(
        &mut self,
        lookup: &StepLookup<'v>,
        r: &Reads,
        step_ids: &BTreeSet<String>,
    ) -> Result<Boxed<'v>, String> {
        let whole = Reads {
            whole: true,
            children: BTreeMap::new(),
        };
        let ids: Vec<(&str, &Reads)> = if r.whole {
            step_ids.iter().map(|id| (id.as_str(), &whole)).collect()
        } else {
            r.children
                .iter()
                .filter_map(|(k, r)| match k {
                    Key::Str(id) => Some((id.as_str(), r)),
                    Key::Int(_) => None,
                })
                .collect()
        };
        let mut map: HashMap<CelMapKey<'v>, Boxed<'v>> = HashMap::new();
        for (id, r) in ids {
            let Some((status, output)) = lookup(id) else {
                continue;
            };
            let mut at = vec!["steps".to_owned(), id.to_owned()];
            self.count(&at)?;
            let mut fields: HashMap<CelMapKey<'v>, Boxed<'v>> = HashMap::new();
            for (field, value) in [("status", Some(status)), ("output", None)] {
                let wanted = if r.whole {
                    Some(&whole)
                } else {
                    r.children.get(&Key::Str(field.to_owned()))
                };
                let Some(wanted) = wanted else { continue };
                at.push(field.to_owned());
                let converted = match (value, output) {
                    (Some(status), _) => self.owned(&status, &at)?,
                    (None, Some(output)) => self.json(output, wanted, &mut at)?,
                    (None, None) => {
                        self.count(&at)?;
                        Box::new(CelNull)
                    }
                };
                at.pop();
                fields.insert(CelMapKey::from(field), converted);
            }
            map.insert(
                CelMapKey::from(id.to_owned()),
                Box::new(CelMap::from(fields)),
            );
        }
        Ok(Box::new(CelMap::from(map)))
    }

    /// A value the lookup produced (a status): small, so copied.
    fn owned<'v>(&mut self, v: &Value, at: &[String]) -> Result<Boxed<'v>, String> {
        self.count(at)?;
        Ok(match v {
            Value::String(s) => Box::new(CelString::from(s.clone())),
            _ => Box::new(CelNull),
        })
    }

    /// `v` pruned to `r`. Lists read only by index keep their length up to
    /// the last index read, with nulls in between: an expression that reads
    /// only indexes cannot tell.
    fn json<'v>(
        &mut self,
        v: &'v Value,
        r: &Reads,
        at: &mut Vec<String>,
    ) -> Result<Boxed<'v>, String> {
        if r.whole {
            return self.whole(v, at);
        }
        self.count(at)?;
        match v {
            Value::Object(o) => {
                let mut map: HashMap<CelMapKey<'v>, Boxed<'v>> = HashMap::new();
                for (k, child) in &r.children {
                    let Key::Str(k) = k else { continue };
                    if let Some((key, value)) = o.get_key_value(k) {
                        at.push(k.clone());
                        map.insert(CelMapKey::from(key.as_str()), self.json(value, child, at)?);
                        at.pop();
                    }
                }
                Ok(Box::new(CelMap::from(map)))
            }
            Value::Array(a) => {
                let last = r.children.keys().filter_map(|k| match k {
                    Key::Int(i) => usize::try_from(*i).ok(),
                    Key::Str(_) => None,
                });
                let len = last.max().map_or(0, |i| (i + 1).min(a.len()));
                let mut list: Vec<Boxed<'v>> = Vec::with_capacity(len);
                for (i, value) in a.iter().take(len).enumerate() {
                    match r.children.get(&Key::Int(i as i64)) {
                        Some(child) => {
                            at.push(i.to_string());
                            list.push(self.json(value, child, at)?);
                            at.pop();
                        }
                        None => list.push(Box::new(CelNull)),
                    }
                }
                Ok(Box::new(CelList::from(list)))
            }
            // A scalar read by a path below it: selecting will fail as it would have.
            _ => Ok(scalar(v)),
        }
    }

    /// All of `v`, counting every value; an explicit stack, as `v` may be deep.
    fn whole<'v>(&mut self, v: &'v Value, at: &[String]) -> Result<Boxed<'v>, String> {
        enum Frame<'v> {
            List(std::slice::Iter<'v, Value>, Vec<Boxed<'v>>),
            Map(
                serde_json::map::Iter<'v>,
                HashMap<CelMapKey<'v>, Boxed<'v>>,
                Option<&'v str>,
            ),
        }
        let open = |v: &'v Value| match v {
            Value::Array(a) => Some(Frame::List(a.iter(), Vec::with_capacity(a.len()))),
            Value::Object(o) => Some(Frame::Map(o.iter(), HashMap::with_capacity(o.len()), None)),
            _ => None,
        };
        self.count(at)?;
        let Some(first) = open(v) else {
            return Ok(scalar(v));
        };
        let mut stack = vec![first];
        loop {
            let top = stack.last_mut().expect("the stack is never empty here");
            let next = match top {
                Frame::List(items, _) => items.next(),
                Frame::Map(entries, _, key) => entries.next().map(|(k, v)| {
                    *key = Some(k.as_str());
                    v
                }),
            };
            let done: Boxed<'v> = match next {
                Some(child) => {
                    self.count(at)?;
                    match open(child) {
                        Some(frame) => {
                            stack.push(frame);
                            continue;
                        }
                        None => scalar(child),
                    }
                }
                None => match stack.pop().expect("the stack is never empty here") {
                    Frame::List(_, list) => Box::new(CelList::from(list)),
                    Frame::Map(_, map, _) => Box::new(CelMap::from(map)),
                },
            };
            // Hand the finished value to its parent, or return it.
            let Some(parent) = stack.last_mut() else {
                return Ok(done);
            };
            match parent {
                Frame::List(_, list) => list.push(done),
                Frame::Map(_, map, key) => {
                    let k = key
                        .take()
                        .expect("a map entry's key is set before its value");
                    map.insert(CelMapKey::from(k), done);
                }
            }
        }
    }
}

/// JSON to CEL for a scalar. Integers become CEL `int` whenever they fit, as
/// CEL literals are: a non-negative number as `uint` would give
/// `params.n + 1` no overload.
fn scalar(v: &Value) -> Box<dyn Val + '_> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(_) | Value::Object(_) => Box::new(CelNull),
    }
}
