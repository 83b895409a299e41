//! The type check of `when` and `until` at validation: JSON types inferred from the producing agents' output schemas and the params' declared types; mismatched comparisons, non-boolean conditions and undeclared fields are reported.
//!
//! What no schema describes is unknown and passes: the check only refuses
//! what is certain to fail or mislead at run time.

use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use super::Condition;
use super::reads::{Key, as_path};
use crate::edges::{Child, SchemaAt, Types, list};
use crate::model::{Step, WorkflowAgent};
use crate::reference::Seg;
use crate::source::{Diagnostic, WorkflowSource};

/// Type-checks every step's `when` and `repeat.until`.
pub fn check(
    src: &WorkflowSource,
    steps: &[Step],
    agents: &BTreeMap<String, WorkflowAgent>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for step in steps {
        let base = Roots::from([("params", params_root(src))]);
        if let Some(c) = &step.when {
            let mut roots = base.clone();
            roots.insert("steps", steps_root(c, steps, agents));
            let field = format!("steps[{}].when", step.index);
            for problem in Checker::run(c, &roots) {
                diags.push(src.map.diag(&field, problem));
            }
        }
        if let Some(rep) = &step.repeat {
            let mut roots = base;
            roots.insert("critic", outputs(&step.id, &[&rep.critic], agents));
            roots.insert("output", step_output(step, agents));
            roots.insert("iteration", Ty::of("integer"));
            let field = format!("steps[{}].repeat.until", step.index);
            for problem in Checker::run(&rep.until, &roots) {
                diags.push(src.map.diag(&field, problem));
            }
        }
    }
    diags
}

type Roots<'a> = BTreeMap<&'static str, Ty<'a>>;

/// `params`: each declared param with its declared type.
fn params_root(src: &WorkflowSource) -> Ty<'_> {
    let known = src
        .def
        .params
        .iter()
        .map(|(name, p)| (name.clone(), Ty::of(p.ty.json_type())))
        .collect();
    Ty::object("the workflow has no param", known)
}

/// A schema that describes a value, and who produces it (for messages).
#[derive(Clone)]
struct Origin<'a> {
    at: SchemaAt<'a>,
    agent: String,
    step: String,
}

/// Members known without a schema, such as `params.<name>`.
#[derive(Clone)]
struct Fields<'a> {
    /// How a missing member is reported: "the workflow has no param".
    what: String,
    known: BTreeMap<String, Ty<'a>>,
}

/// What is known of a value's type.
#[derive(Clone, Default)]
struct Ty<'a> {
    /// JSON types it may have; `None` when unknown.
    types: Types,
    /// The schemas that describe it, one per agent that may produce it.
    schemas: Vec<Origin<'a>>,
    fields: Option<Fields<'a>>,
    /// The elements of a list known without a schema (a for-each step's output).
    elem: Option<Box<Ty<'a>>>,
}

impl<'a> Ty<'a> {
    fn of(t: &str) -> Self {
        Self {
            types: Some(BTreeSet::from([t.to_owned()])),
            ..Self::default()
        }
    }

    fn object(what: impl Into<String>, known: BTreeMap<String, Ty<'a>>) -> Self {
        Self {
            fields: Some(Fields {
                what: what.into(),
                known,
            }),
            ..Self::of("object")
        }
    }

    fn unknown() -> Self {
        Self::default()
    }

    fn from_schemas(schemas: Vec<Origin<'a>>) -> Self {
        let mut types = Some(BTreeSet::new());
        for o in &schemas {
            types = match (types, o.at.types()) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    Some(a)
                }
                _ => None,
            };
        }
        Self {
            types,
            schemas,
            ..Self::default()
        }
    }

    /// The type of a member, or what makes it absent.
    fn child(&self, key: &Key) -> Result<Ty<'a>, String> {
        if let Some(fields) = &self.fields {
            return match key {
                Key::Str(k) => fields.known.get(k).cloned().ok_or_else(|| {
                    let names: Vec<&str> = fields.known.keys().map(String::as_str).collect();
                    format!("{} `{k}`; it has: {}", fields.what, names.join(", "))
                }),
                Key::Int(_) => Ok(Ty::unknown()),
            };
        }
        if let (Some(elem), Key::Int(_)) = (&self.elem, key) {
            return Ok((**elem).clone());
        }
        let seg = match key {
            Key::Str(k) => Seg::Key(k.clone()),
            Key::Int(i) => match usize::try_from(*i) {
                Ok(i) => Seg::Index(i),
                Err(_) => return Ok(Ty::unknown()),
            },
        };
        let mut found = Vec::new();
        for o in &self.schemas {
            match o.at.walk_produced(std::slice::from_ref(&seg)) {
                Child::Known(at) => found.push(Origin { at, ..o.clone() }),
                Child::Any => return Ok(Ty::unknown()),
                Child::Absent => {
                    let fields = o.at.property_names();
                    return Err(format!(
                        "agent `{}` (step `{}`) has no output field `{seg}`{}",
                        o.agent,
                        o.step,
                        if fields.is_empty() {
                            String::new()
                        } else {
                            format!("; its fields there are: {}", fields.join(", "))
                        }
                    ));
                }
            }
        }
        if found.is_empty() {
            return Ok(Ty::unknown());
        }
        Ok(Ty::from_schemas(found))
    }

    /// The type of any element, for a comprehension's variable.
    fn element(&self) -> Ty<'a> {
        if let Some(elem) = &self.elem {
            return (**elem).clone();
        }
        match &self.types {
            Some(t) if t.len() == 1 && t.contains("array") => {
                self.child(&Key::Int(0)).unwrap_or_else(|_| Ty::unknown())
            }
            Some(t) if t.len() == 1 && t.contains("object") => Ty::of("string"),
            _ => Ty::unknown(),
        }
    }

    /// Known types other than `null`, numbers as one.
    fn kinds(&self) -> Option<BTreeSet<&str>> {
        let t = self.types.as_ref()?;
        Some(
            t.iter()
                .filter(|t| *t != "null")
                .map(|t| if t == "integer" { "number" } else { t.as_str() })
                .collect(),
        )
    }

    fn is_boolean_or_unknown(&self) -> bool {
        self.kinds()
            .is_none_or(|k| k.is_empty() || k.contains("boolean"))
    }

    fn describe(&self) -> String {
        self.types.as_ref().map_or("any".into(), list)
    }
}

/// `steps`: for each step the condition names, its status and output.
fn steps_root<'a>(
    c: &Condition,
    steps: &'a [Step],
    agents: &'a BTreeMap<String, WorkflowAgent>,
) -> Ty<'a> {
    let mut known = BTreeMap::new();
    for id in c.steps() {
        let Some(step) = steps.iter().find(|s| &s.id == id) else {
            continue;
        };
        let view = BTreeMap::from([
            ("status".to_owned(), Ty::of("string")),
            ("output".to_owned(), step_output(step, agents)),
        ]);
        known.insert(
            id.clone(),
            Ty::object(format!("step `{id}` has no field"), view),
        );
    }
    Ty::object("no step", known)
}

/// What a step gives: its agent's (or fallback's) output, a list of them
/// for a for-each step, or an approval's input.
fn step_output<'a>(step: &'a Step, agents: &'a BTreeMap<String, WorkflowAgent>) -> Ty<'a> {
    if let Some(a) = &step.approval {
        return Ty::from_schemas(vec![Origin {
            at: SchemaAt::root(&a.schema),
            agent: "(the approval's input)".into(),
            step: step.id.clone(),
        }]);
    }
    let mut names = vec![step.agent.as_str()];
    names.extend(step.fallback.as_deref());
    let one = outputs(&step.id, &names, agents);
    if step.for_each.is_some() {
        return Ty {
            elem: Some(Box::new(one)),
            ..Ty::of("array")
        };
    }
    one
}

/// The output of any of `names`, as step `step` gets it.
fn outputs<'a>(step: &str, names: &[&str], agents: &'a BTreeMap<String, WorkflowAgent>) -> Ty<'a> {
    let mut origins = Vec::new();
    for name in names {
        let Some(a) = agents.get(*name) else {
            return Ty::unknown();
        };
        origins.push(Origin {
            at: SchemaAt::root(a.agent.info().output_schema.source()),
            agent: (*name).to_owned(),
            step: step.to_owned(),
        });
    }
    Ty::from_schemas(origins)
}

struct Checker<'c, 'a> {
    source: &'c str,
    problems: Vec<String>,
    scopes: Vec<(String, Ty<'a>)>,
    roots: &'c Roots<'a>,
}

impl<'c, 'a> Checker<'c, 'a> {
    fn run(c: &'c Condition, roots: &'c Roots<'a>) -> Vec<String> {
        let mut checker = Checker {
            source: c.source(),
            problems: Vec::new(),
            scopes: Vec::new(),
            roots,
        };
        let ty = checker.infer(c.tree());
        if !ty.is_boolean_or_unknown() {
            let problem = format!(
                "`{}` gives {}, not true or false; compare it with something",
                checker.source,
                ty.describe()
            );
            checker.problems.push(problem);
        }
        checker.problems.dedup();
        checker.problems
    }

    fn report(&mut self, problem: String) {
        self.problems.push(format!("`{}`: {problem}", self.source));
    }

    fn lookup(&self, name: &str) -> Ty<'a> {
        if let Some((_, t)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return t.clone();
        }
        self.roots.get(name).cloned().unwrap_or_default()
    }

    fn member(&mut self, of: Ty<'a>, key: &Key) -> Ty<'a> {
        match of.child(key) {
            Ok(t) => t,
            Err(problem) => {
                self.report(problem);
                Ty::unknown()
            }
        }
    }

    fn infer(&mut self, e: &IdedExpr) -> Ty<'a> {
        match &e.expr {
            Expr::Literal(l) => literal(l),
            Expr::Ident(name) => self.lookup(name),
            Expr::Select(s) if s.test => {
                self.infer(&s.operand);
                Ty::of("boolean")
            }
            Expr::Select(s) => {
                let of = self.infer(&s.operand);
                self.member(of, &Key::Str(s.field.clone()))
            }
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    self.infer(t);
                }
                let args: Vec<Ty<'a>> = c.args.iter().map(|a| self.infer(a)).collect();
                self.call(&c.func_name, args, &c.args)
            }
            Expr::Comprehension(c) => {
                let range = self.infer(&c.iter_range);
                let accu = self.infer(&c.accu_init);
                let before = self.scopes.len();
                match &c.iter_var2 {
                    None => self.scopes.push((c.iter_var.clone(), range.element())),
                    Some(v2) => {
                        self.scopes.push((c.iter_var.clone(), Ty::unknown()));
                        self.scopes.push((v2.clone(), Ty::unknown()));
                    }
                }
                self.scopes.push((c.accu_var.clone(), accu));
                self.infer(&c.loop_cond);
                self.infer(&c.loop_step);
                let result = self.infer(&c.result);
                self.scopes.truncate(before);
                result
            }
            Expr::List(l) => {
                l.elements.iter().for_each(|x| {
                    self.infer(x);
                });
                Ty::of("array")
            }
            Expr::Map(_) | Expr::Struct(_) => Ty::of("object"),
            Expr::Unspecified => Ty::unknown(),
        }
    }

    fn call(&mut self, name: &str, args: Vec<Ty<'a>>, exprs: &[IdedExpr]) -> Ty<'a> {
        let op = operator(name);
        match (name, args.as_slice()) {
            (operators::INDEX, [of, _]) => match key_of(&exprs[1]) {
                Some(key) => self.member(of.clone(), &key),
                None => of.element(),
            },
            (
                operators::EQUALS
                | operators::NOT_EQUALS
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                [a, b],
            ) => {
                self.same_type(op, (a, &exprs[0]), (b, &exprs[1]));
                Ty::of("boolean")
            }
            // `all` and `exists` fold their predicate into an accumulator
            // with `&&` and `||`: it is checked here too.
            (operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT, _) => {
                for (t, e) in args.iter().zip(exprs) {
                    self.boolean(t, e, &format!("`{op}` needs booleans"));
                }
                Ty::of("boolean")
            }
            (operators::CONDITIONAL, [cond, a, b]) => {
                self.boolean(cond, &exprs[0], "the condition of `?:` needs a boolean");
                union(a, b)
            }
            (operators::IN, [_, container]) => {
                if let Some(k) = container.kinds()
                    && !k.is_empty()
                    && !k.contains("array")
                    && !k.contains("object")
                {
                    self.report(format!(
                        "{} is {}; `in` needs a list or a map",
                        side(&exprs[1]),
                        container.describe()
                    ));
                }
                Ty::of("boolean")
            }
            (operators::NOT_STRICTLY_FALSE, _) => Ty::of("boolean"),
            (operators::ADD, [a, b]) => arithmetic(a, b, true),
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                [a, b],
            ) => arithmetic(a, b, false),
            (operators::NEGATE, [a]) => a.clone(),
            ("size" | "int" | "uint", _) => Ty::of("integer"),
            ("double", _) => Ty::of("number"),
            ("string", _) => Ty::of("string"),
            ("bool" | "contains" | "startsWith" | "endsWith" | "matches", _) => Ty::of("boolean"),
            _ => Ty::unknown(),
        }
    }

    /// Reports a comparison of two known types that never match.
    fn same_type(
        &mut self,
        op: &str,
        (a, ea): (&Ty<'a>, &IdedExpr),
        (b, eb): (&Ty<'a>, &IdedExpr),
    ) {
        if let (Some(ka), Some(kb)) = (a.kinds(), b.kinds())
            && !ka.is_empty()
            && !kb.is_empty()
            && ka.is_disjoint(&kb)
        {
            self.report(format!(
                "{} is {} but {} is {}; `{op}` needs the same type on both sides",
                side(ea),
                a.describe(),
                side(eb),
                b.describe()
            ));
        }
    }

    /// Reports an operand known not to be a boolean.
    fn boolean(&mut self, t: &Ty<'a>, e: &IdedExpr, why: &str) {
        if !t.is_boolean_or_unknown() {
            self.report(format!(
                "{} gives {}, not true or false; {why}",
                side(e),
                t.describe()
            ));
        }
    }
}

fn key_of(e: &IdedExpr) -> Option<Key> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Key::Str(s.inner().to_owned())),
        Expr::Literal(LiteralValue::Int(i)) => Some(Key::Int(*i.inner())),
        Expr::Literal(LiteralValue::UInt(u)) => i64::try_from(*u.inner()).ok().map(Key::Int),
        _ => None,
    }
}

fn literal(l: &LiteralValue) -> Ty<'static> {
    match l {
        LiteralValue::Boolean(_) => Ty::of("boolean"),
        LiteralValue::Int(_) | LiteralValue::UInt(_) => Ty::of("integer"),
        LiteralValue::Double(_) => Ty::of("number"),
        LiteralValue::String(_) => Ty::of("string"),
        LiteralValue::Null => Ty::of("null"),
        LiteralValue::Bytes(_) => Ty::of("bytes"),
    }
}

fn union<'a>(a: &Ty<'a>, b: &Ty<'a>) -> Ty<'a> {
    match (&a.types, &b.types) {
        (Some(x), Some(y)) => Ty {
            types: Some(x.union(y).cloned().collect()),
            ..Ty::default()
        },
        _ => Ty::unknown(),
    }
}

/// The type of `a + b` (`plus`) or another arithmetic operator.
fn arithmetic<'a>(a: &Ty<'a>, b: &Ty<'a>, plus: bool) -> Ty<'a> {
    let single = |t: &Ty<'a>| {
        t.kinds()
            .filter(|k| k.len() == 1)
            .and_then(|k| k.into_iter().next().map(str::to_owned))
    };
    match (single(a), single(b)) {
        (Some(x), Some(y)) if x == "number" && y == "number" => {
            let both_int = a.types.as_ref().is_some_and(|t| t.contains("integer"))
                && b.types.as_ref().is_some_and(|t| t.contains("integer"));
            Ty::of(if both_int { "integer" } else { "number" })
        }
        (Some(x), Some(y)) if plus && x == y && (x == "string" || x == "array") => Ty::of(&x),
        _ => Ty::unknown(),
    }
}

/// The operator as written: `==` for `_==_`.
fn operator(name: &str) -> &str {
    match name {
        operators::IN => "in",
        operators::CONDITIONAL => "?:",
        operators::LOGICAL_NOT => "!",
        _ => name.trim_matches('_'),
    }
}

/// An operand as the user wrote it, where that is easy to say.
fn side(e: &IdedExpr) -> String {
    if let Some((root, keys)) = as_path(e) {
        let mut out = root.to_owned();
        for k in keys {
            match k {
                Key::Str(s) if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    out.push('.');
                    out.push_str(&s);
                }
                Key::Str(s) => out.push_str(&format!("[{s:?}]")),
                Key::Int(i) => out.push_str(&format!("[{i}]")),
            }
        }
        return format!("`{out}`");
    }
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => format!("`{:?}`", s.inner()),
        Expr::Literal(LiteralValue::Int(i)) => format!("`{}`", i.inner()),
        Expr::Literal(LiteralValue::UInt(u)) => format!("`{}u`", u.inner()),
        Expr::Literal(LiteralValue::Double(d)) => format!("`{}`", d.inner()),
        Expr::Literal(LiteralValue::Boolean(b)) => format!("`{}`", b.inner()),
        Expr::Literal(LiteralValue::Null) => "`null`".into(),
        _ => "an operand".into(),
    }
}
