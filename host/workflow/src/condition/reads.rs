//! The data paths a condition reads, found in its tree: `steps.a.output.label` reads that field, not the whole output.

use std::collections::BTreeMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};

/// One step of a path: a field or map key, or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Str(String),
    Int(i64),
}

/// What is read below one place: everything (`whole`), or only some children.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reads {
    pub whole: bool,
    pub children: BTreeMap<Key, Reads>,
}

impl Reads {
    fn mark(&mut self, path: &[Key]) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some((k, rest)) => self.children.entry(k.clone()).or_default().mark(rest),
        }
    }
}

/// The reads of every free variable of `tree`, by variable name.
pub fn collect(tree: &IdedExpr) -> BTreeMap<String, Reads> {
    let mut out = BTreeMap::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// A path expression: a variable followed by fields and constant indexes.
pub fn as_path(e: &IdedExpr) -> Option<(&str, Vec<Key>)> {
    let mut keys = Vec::new();
    let mut at = e;
    loop {
        match &at.expr {
            Expr::Ident(name) => {
                keys.reverse();
                return Some((name, keys));
            }
            Expr::Select(s) => {
                keys.push(Key::Str(s.field.clone()));
                at = &s.operand;
            }
            Expr::Call(c) if c.func_name == operators::INDEX && c.target.is_none() => {
                let [operand, key] = c.args.as_slice() else {
                    return None;
                };
                keys.push(match &key.expr {
                    Expr::Literal(LiteralValue::String(s)) => Key::Str(s.inner().to_owned()),
                    Expr::Literal(LiteralValue::Int(i)) => Key::Int(*i.inner()),
                    Expr::Literal(LiteralValue::UInt(u)) => {
                        Key::Int(i64::try_from(*u.inner()).ok()?)
                    }
                    _ => return None,
                });
                at = operand;
            }
            _ => return None,
        }
    }
}

fn walk(e: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeMap<String, Reads>) {
    // A maximal path reads everything below its end; the places above it
    // are only passed through.
    if let Some((root, keys)) = as_path(e) {
        if !bound.iter().any(|b| b == root) {
            out.entry(root.to_owned()).or_default().mark(&keys);
        }
        return;
    }
    match &e.expr {
        Expr::Select(s) => walk(&s.operand, bound, out),
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, bound, out);
            }
            for a in &c.args {
                walk(a, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, out);
            walk(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.push(c.accu_var.clone());
            bound.extend(c.iter_var2.clone());
            for x in [&c.loop_cond, &c.loop_step, &c.result] {
                walk(x, bound, out);
            }
            bound.truncate(before);
        }
        Expr::List(l) => l.elements.iter().for_each(|x| walk(x, bound, out)),
        Expr::Map(m) => m
            .entries
            .iter()
            .for_each(|x| walk_entry(&x.expr, bound, out)),
        Expr::Struct(s) => s
            .entries
            .iter()
            .for_each(|x| walk_entry(&x.expr, bound, out)),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn walk_entry(e: &EntryExpr, bound: &mut Vec<String>, out: &mut BTreeMap<String, Reads>) {
    match e {
        EntryExpr::StructField(f) => walk(&f.value, bound, out),
        EntryExpr::MapEntry(m) => {
            walk(&m.key, bound, out);
            walk(&m.value, bound, out);
        }
    }
}
