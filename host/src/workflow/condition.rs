//! CEL conditions (`when`, `until`) with the `cel` crate: bounded before parsing, parsed on a large stack, steps they read found in the AST.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Context, Program};
use serde_json::Value;

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 2048;
/// Deepest nesting of parentheses, brackets and braces accepted. The `cel`
/// parser recurses per level and overflows an 8 MB stack near 100.
pub const MAX_NESTING: usize = 24;
/// Deepest expression tree accepted (`a + a + ...` chains count too).
const MAX_TREE_DEPTH: usize = 64;
/// Longest run of prefix operators (`!`, `-`) accepted; each is a recursion.
const MAX_UNARY_RUN: usize = 16;

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
    variables: BTreeSet<String>,
    steps: BTreeSet<String>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Checks the bounds, then parses on a thread with a large stack so no
    /// expression can overflow the caller's.
    pub fn compile(source: &str) -> Result<Self, String> {
        check_bounds(source)?;
        let owned = source.to_owned();
        let parsed = std::thread::Builder::new()
            .name("corral-cel-parse".into())
            .stack_size(64 << 20)
            .spawn(move || {
                let program = std::panic::catch_unwind(|| Program::compile(&owned))
                    .map_err(|_| "the CEL parser failed on this expression".to_owned())
                    .and_then(|r| r.map_err(|e| format!("invalid CEL: {e}")))?;
                // Evaluation recurses over the tree on the caller's stack:
                // measure it here, on the big one.
                let depth = depth(program.expression());
                if depth > MAX_TREE_DEPTH {
                    return Err(format!(
                        "the expression is {depth} operations deep; the limit is {MAX_TREE_DEPTH}"
                    ));
                }
                Ok(program)
            })
            .map_err(|e| format!("cannot start the CEL parser: {e}"))?
            .join()
            .map_err(|_| "the CEL parser failed on this expression".to_owned())??;
        let mut variables = BTreeSet::new();
        let mut steps = BTreeSet::new();
        walk(parsed.expression(), &mut variables, &mut steps);
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(parsed),
            variables,
            steps,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Top-level variables the expression reads (`params`, `steps`, ...).
    pub fn variables(&self) -> &BTreeSet<String> {
        &self.variables
    }

    /// Step ids read through `steps.<id>` or `steps["<id>"]`.
    pub fn steps(&self) -> &BTreeSet<String> {
        &self.steps
    }

    /// Evaluates with the given variables; anything but a boolean is an error.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<bool, String> {
        let mut ctx = Context::default();
        for (name, value) in vars {
            ctx.add_variable_from_value(*name, to_cel(value));
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "`{}` must be true or false, but gave {other:?}",
                self.source
            )),
            Err(e) => Err(format!("`{}` failed: {e}", self.source)),
        }
    }
}

/// JSON to CEL. Integers become CEL `int` whenever they fit, as CEL
/// literals are: serde's default would make every non-negative number a
/// `uint`, and `params.n + 1` would then have no overload.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => cel::Value::Map(cel::objects::Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

fn check_bounds(source: &str) -> Result<(), String> {
    if source.len() > MAX_LEN {
        return Err(format!(
            "the expression is {} bytes; the limit is {MAX_LEN}",
            source.len()
        ));
    }
    let (mut depth, mut max_depth, mut run, mut max_run) = (0usize, 0usize, 0usize, 0usize);
    let mut in_string: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_string = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if matches!(c, '!' | '-') {
            run += 1;
            max_run = max_run.max(run);
        } else if !c.is_whitespace() {
            run = 0;
        }
    }
    if max_depth > MAX_NESTING {
        return Err(format!(
            "the expression nests {max_depth} levels deep; the limit is {MAX_NESTING}"
        ));
    }
    if max_run > MAX_UNARY_RUN {
        return Err(format!(
            "the expression chains {max_run} prefix operators; the limit is {MAX_UNARY_RUN}"
        ));
    }
    Ok(())
}

fn walk(e: &IdedExpr, vars: &mut BTreeSet<String>, steps: &mut BTreeSet<String>) {
    match &e.expr {
        Expr::Ident(name) => {
            vars.insert(name.clone());
        }
        Expr::Select(s) => {
            if let Expr::Ident(root) = &s.operand.expr
                && root == "steps"
            {
                steps.insert(s.field.clone());
            }
            walk(&s.operand, vars, steps);
        }
        Expr::Call(c) => {
            if c.func_name == "_[_]"
                && let [target, key] = c.args.as_slice()
                && matches!(&target.expr, Expr::Ident(r) if r == "steps")
                && let Expr::Literal(LiteralValue::String(id)) = &key.expr
            {
                steps.insert(id.to_string());
            }
            if let Some(t) = &c.target {
                walk(t, vars, steps);
            }
            for a in &c.args {
                walk(a, vars, steps);
            }
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(x, vars, steps);
            }
            // The comprehension's own variables are not free variables.
            vars.remove(&c.iter_var);
            vars.remove(&c.accu_var);
            if let Some(v) = &c.iter_var2 {
                vars.remove(v);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| walk(x, vars, steps)),
        Expr::Map(m) => m
            .entries
            .iter()
            .for_each(|x| walk_entry(&x.expr, vars, steps)),
        Expr::Struct(s) => s
            .entries
            .iter()
            .for_each(|x| walk_entry(&x.expr, vars, steps)),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn depth(e: &IdedExpr) -> usize {
    let child = |x: &IdedExpr| depth(x);
    1 + match &e.expr {
        Expr::Select(s) => child(&s.operand),
        Expr::Call(c) => c
            .target
            .iter()
            .map(|t| child(t))
            .chain(c.args.iter().map(child))
            .max()
            .unwrap_or(0),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .map(child)
        .max()
        .unwrap_or(0),
        Expr::List(l) => l.elements.iter().map(child).max().unwrap_or(0),
        Expr::Map(m) => m
            .entries
            .iter()
            .map(|x| entry_depth(&x.expr))
            .max()
            .unwrap_or(0),
        Expr::Struct(s) => s
            .entries
            .iter()
            .map(|x| entry_depth(&x.expr))
            .max()
            .unwrap_or(0),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => 0,
    }
}

fn entry_depth(e: &EntryExpr) -> usize {
    match e {
        EntryExpr::StructField(f) => depth(&f.value),
        EntryExpr::MapEntry(m) => depth(&m.key).max(depth(&m.value)),
    }
}

fn walk_entry(e: &EntryExpr, vars: &mut BTreeSet<String>, steps: &mut BTreeSet<String>) {
    match e {
        EntryExpr::StructField(f) => walk(&f.value, vars, steps),
        EntryExpr::MapEntry(m) => {
            walk(&m.key, vars, steps);
            walk(&m.value, vars, steps);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_steps_and_variables() {
        let c = Condition::compile(
            r#"steps.route.output.label == "bug" && params.n > 2 || steps["b"].status == "ok""#,
        )
        .unwrap();
        assert_eq!(c.steps().iter().collect::<Vec<_>>(), ["b", "route"]);
        assert_eq!(
            c.variables().iter().collect::<Vec<_>>(),
            ["params", "steps"]
        );
        let c = Condition::compile("critic.issues.all(i, i.rule != 'x')").unwrap();
        assert_eq!(c.variables().iter().collect::<Vec<_>>(), ["critic"]);
    }

    #[test]
    fn evaluates_to_booleans_only() {
        let c = Condition::compile("params.n > 2").unwrap();
        assert!(c.eval(&[("params", &json!({"n": 3}))]).unwrap());
        assert!(!c.eval(&[("params", &json!({"n": 1}))]).unwrap());
        let c = Condition::compile("params.n + 1 == 4 && size(params.xs) == 2 && params.f > 0.5")
            .unwrap();
        assert!(
            c.eval(&[("params", &json!({"n": 3, "xs": [1, 2], "f": 0.75}))])
                .unwrap()
        );
        let c = Condition::compile("params.s").unwrap();
        assert!(
            c.eval(&[("params", &json!({"s": "yes"}))])
                .unwrap_err()
                .contains("must be true or false")
        );
    }

    #[test]
    fn hostile_expressions_are_refused_not_crashing() {
        assert!(
            Condition::compile("steps.a.output.x ==")
                .unwrap_err()
                .contains("invalid CEL")
        );
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(
            Condition::compile(&deep)
                .unwrap_err()
                .contains("nests 200 levels")
        );
        assert!(
            Condition::compile(&"!".repeat(1000))
                .unwrap_err()
                .contains("prefix operators")
        );
        assert!(
            Condition::compile(&"a".repeat(5000))
                .unwrap_err()
                .contains("limit is 2048")
        );
        // Just under the bounds still parses, on any caller's stack.
        let ok = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(Condition::compile(&ok).is_ok());
        let long = vec!["a"; 500].join("+");
        assert!(
            Condition::compile(&long)
                .unwrap_err()
                .contains("operations deep")
        );
    }
}
