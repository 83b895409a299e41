//! What a condition may cost: its tree's shape, a static estimate checked at validation, and the meter woven into the tree that bounds every evaluation.
//!
//! The `cel` interpreter has no cost limit of its own, so the tree it runs
//! carries one: every comprehension's range passes through `@corral_iterate`,
//! which charges the elements it will visit times the body's size, and every
//! operand an operator reads passes through `@corral_read`, which charges the
//! size of the value (`@corral_peek` for the operands of `size` and indexing,
//! which read only the top of a list or map). Past [`MAX_COST`](super::MAX_COST) the functions fail
//! and the evaluation stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedEntryExpr, IdedExpr, LiteralValue, operators,
};
use cel::common::types::{CelBytes, CelInt, CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};
use cel::{Context, ExecutionError, FunctionContext};

use super::MAX_VALUES;

const ITERATE: &str = "@corral_iterate";
const READ: &str = "@corral_read";
const PEEK: &str = "@corral_peek";
/// Text is charged one step per this many bytes.
const BYTES_PER_STEP: u64 = 64;

/// Depth and node count of a tree.
pub struct Shape {
    pub depth: usize,
    pub nodes: usize,
}

pub fn shape(e: &IdedExpr) -> Shape {
    let mut nodes = 0;
    let depth = measure(e, &mut nodes);
    Shape { depth, nodes }
}

fn measure(e: &IdedExpr, nodes: &mut usize) -> usize {
    *nodes += 1;
    children(e)
        .into_iter()
        .map(|c| measure(c, nodes))
        .max()
        .unwrap_or(0)
        + 1
}

/// The direct subexpressions of `e`.
fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Select(s) => vec![&s.operand],
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m.entries.iter().flat_map(entry_children).collect(),
        Expr::Struct(s) => s.entries.iter().flat_map(entry_children).collect(),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entry_children(e: &IdedEntryExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        EntryExpr::StructField(f) => vec![&f.value],
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
    }
}

/// Evaluation steps in the worst case, data traversal aside (the meter
/// charges that): each comprehension runs its body once per element of its
/// range, and a list read from data has at most [`MAX_VALUES`] elements.
pub fn estimate(e: &IdedExpr) -> u64 {
    cost_and_len(e).0
}

/// The cost of `e`, and a bound on the length of the list or map it gives.
fn cost_and_len(e: &IdedExpr) -> (u64, u64) {
    match &e.expr {
        Expr::Comprehension(c) => {
            let (range, len) = cost_and_len(&c.iter_range);
            let body = estimate(&c.loop_cond).saturating_add(estimate(&c.loop_step));
            let cost = range
                .saturating_add(estimate(&c.accu_init))
                .saturating_add(len.saturating_mul(body))
                .saturating_add(estimate(&c.result))
                .saturating_add(1);
            // `map` and `filter` give at most one element per element.
            let gives = if appends(c) { len } else { MAX_VALUES };
            (cost, gives)
        }
        Expr::List(l) => (sum(children(e)), l.elements.len() as u64),
        Expr::Map(m) => (sum(children(e)), m.entries.len() as u64),
        Expr::Call(c) if c.func_name == operators::ADD && c.target.is_none() => {
            let parts: Vec<(u64, u64)> = c.args.iter().map(cost_and_len).collect();
            let cost = parts.iter().fold(1u64, |a, p| a.saturating_add(p.0));
            let len = parts.iter().fold(0u64, |a, p| a.saturating_add(p.1));
            (cost, len)
        }
        Expr::Call(c) if c.func_name == operators::CONDITIONAL => {
            let parts: Vec<(u64, u64)> = c.args.iter().map(cost_and_len).collect();
            let cost = parts.iter().fold(1u64, |a, p| a.saturating_add(p.0));
            let len = parts.iter().skip(1).map(|p| p.1).max().unwrap_or(0);
            (cost, len)
        }
        _ => (sum(children(e)), MAX_VALUES),
    }
}

fn sum(children: Vec<&IdedExpr>) -> u64 {
    children
        .into_iter()
        .fold(1u64, |a, c| a.saturating_add(estimate(c)))
}

/// Whether a comprehension only appends to its accumulator (`map`, `filter`).
fn appends(c: &ComprehensionExpr) -> bool {
    matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty())
        && matches!(&c.result.expr, Expr::Ident(n) if *n == c.accu_var)
}

/// `e` with the meter woven in (see the module's documentation).
pub fn instrument(e: &IdedExpr) -> IdedExpr {
    let mut next_id = max_id(e) + 1;
    weave(e, &mut Vec::new(), &mut next_id)
}

fn max_id(e: &IdedExpr) -> u64 {
    children(e).into_iter().map(max_id).fold(e.id, u64::max)
}

fn fresh(expr: Expr, next_id: &mut u64) -> IdedExpr {
    *next_id += 1;
    IdedExpr { id: *next_id, expr }
}

fn call(name: &str, args: Vec<IdedExpr>, next_id: &mut u64) -> IdedExpr {
    fresh(
        Expr::Call(CallExpr {
            func_name: name.to_owned(),
            target: None,
            args,
        }),
        next_id,
    )
}

/// Operators that read no more of their operands than a boolean or a
/// number: left alone, so `&&`, `||` and `?:` keep their short circuits.
const FREE: [&str; 6] = [
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::CONDITIONAL,
    operators::NOT_STRICTLY_FALSE,
    operators::NEGATE,
];

/// Operators that read only the top of a list or map operand.
const SHALLOW: [&str; 3] = [operators::INDEX, operators::OPT_INDEX, "size"];

fn weave(e: &IdedExpr, accus: &mut Vec<String>, next_id: &mut u64) -> IdedExpr {
    let expr = match &e.expr {
        Expr::Call(c) => weave_call(c, accus, next_id),
        Expr::Comprehension(c) => {
            let weight = (shape(&c.loop_cond).nodes + shape(&c.loop_step).nodes) as i64;
            let range = weave(&c.iter_range, accus, next_id);
            let weight = fresh(
                Expr::Literal(LiteralValue::Int(CelInt::from(weight))),
                next_id,
            );
            let iter_range = call(ITERATE, vec![range, weight], next_id);
            let accu_init = weave(&c.accu_init, accus, next_id);
            accus.push(c.accu_var.clone());
            let loop_cond = weave(&c.loop_cond, accus, next_id);
            let loop_step = weave(&c.loop_step, accus, next_id);
            let result = weave(&c.result, accus, next_id);
            accus.pop();
            Expr::Comprehension(Box::new(ComprehensionExpr {
                iter_range,
                iter_var: c.iter_var.clone(),
                iter_var2: c.iter_var2.clone(),
                accu_var: c.accu_var.clone(),
                accu_init,
                loop_cond,
                loop_step,
                result,
            }))
        }
        Expr::Select(s) => {
            let mut s = s.clone();
            s.operand = Box::new(weave(&s.operand, accus, next_id));
            Expr::Select(s)
        }
        Expr::List(l) => {
            let mut l = l.clone();
            for x in &mut l.elements {
                *x = weave(x, accus, next_id);
            }
            Expr::List(l)
        }
        Expr::Map(m) => {
            let mut m = m.clone();
            for entry in &mut m.entries {
                weave_entry(&mut entry.expr, accus, next_id);
            }
            Expr::Map(m)
        }
        Expr::Struct(s) => {
            let mut s = s.clone();
            for entry in &mut s.entries {
                weave_entry(&mut entry.expr, accus, next_id);
            }
            Expr::Struct(s)
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => e.expr.clone(),
    };
    IdedExpr { id: e.id, expr }
}

fn weave_call(c: &CallExpr, accus: &mut Vec<String>, next_id: &mut u64) -> Expr {
    let is_accu =
        |a: &IdedExpr, accus: &[String]| matches!(&a.expr, Expr::Ident(n) if accus.contains(n));
    let name = c.func_name.as_str();
    // `@result + [x]` is how `map` and `filter` append; the interpreter
    // recognizes that shape to append in place.
    let wrapper = if FREE.contains(&name)
        || (name == operators::ADD && c.args.first().is_some_and(|a| is_accu(a, accus)))
    {
        None
    } else if SHALLOW.contains(&name) {
        Some(PEEK)
    } else {
        Some(READ)
    };
    let mut read = |a: &IdedExpr| {
        let woven = weave(a, accus, next_id);
        match wrapper {
            // A literal's size is known and small: its node pays for it.
            Some(w) if !is_accu(a, accus) && !matches!(a.expr, Expr::Literal(_)) => {
                call(w, vec![woven], next_id)
            }
            _ => woven,
        }
    };
    let target = c.target.as_ref().map(|t| Box::new(read(t)));
    let args = c.args.iter().map(read).collect();
    Expr::Call(CallExpr {
        func_name: c.func_name.clone(),
        target,
        args,
    })
}

fn weave_entry(e: &mut EntryExpr, accus: &mut Vec<String>, next_id: &mut u64) {
    match e {
        EntryExpr::StructField(f) => f.value = weave(&f.value, accus, next_id),
        EntryExpr::MapEntry(m) => {
            m.key = weave(&m.key, accus, next_id);
            m.value = weave(&m.value, accus, next_id);
        }
    }
}

/// The steps one evaluation may still take.
pub struct Meter {
    left: AtomicU64,
    exceeded: AtomicBool,
}

type Function = Box<
    dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError>
        + Send
        + Sync,
>;

impl Meter {
    pub fn new(steps: u64) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU64::new(steps),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Whether the evaluation ran out of steps.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    fn charge(&self, steps: u64) -> Result<(), ExecutionError> {
        let left = self.left.load(Ordering::Relaxed);
        if steps > left || self.exceeded() {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(ExecutionError::function_error(
                "cost",
                "the condition ran out of evaluation steps",
            ));
        }
        self.left.store(left - steps, Ordering::Relaxed);
        Ok(())
    }

    fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Registers the metering functions the woven tree calls.
    pub fn install(self: &Arc<Self>, ctx: &mut Context<'_, '_>) {
        let meter = Arc::clone(self);
        let iterate: Function = Box::new(move |ftx| {
            let weight = ftx
                .args
                .get(1)
                .and_then(|w| w.downcast_ref::<CelInt>())
                .map_or(1, |w| u64::try_from(*w.inner()).unwrap_or(1));
            let range = take_first(ftx)?;
            let len = length(range.as_ref());
            meter.charge(size(range.as_ref(), meter.left()))?;
            meter.charge(len.saturating_mul(weight))?;
            Ok(range)
        });
        let meter = Arc::clone(self);
        let read: Function = Box::new(move |ftx| {
            let value = take_first(ftx)?;
            meter.charge(size(value.as_ref(), meter.left()))?;
            Ok(value)
        });
        let meter = Arc::clone(self);
        let peek: Function = Box::new(move |ftx| {
            let value = take_first(ftx)?;
            meter.charge(1 + text_len(value.as_ref()) / BYTES_PER_STEP)?;
            Ok(value)
        });
        for (name, f) in [(ITERATE, iterate), (READ, read), (PEEK, peek)] {
            ctx.add_function(name, f)
                .expect("the name is not a standard function");
        }
    }
}

fn take_first<'c, 'v>(ftx: &mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError> {
    if ftx.args.is_empty() {
        return Err(ExecutionError::invalid_argument_count(1, 0));
    }
    Ok(ftx.args.swap_remove(0))
}

/// Elements of a list or map, 0 for anything else.
fn length(v: &dyn Val) -> u64 {
    if let Some(l) = v.downcast_ref::<CelList>() {
        l.inner().len() as u64
    } else if let Some(m) = v.downcast_ref::<CelMap>() {
        m.inner().len() as u64
    } else {
        0
    }
}

/// Bytes of a string or bytes value, 0 for anything else.
fn text_len(v: &dyn Val) -> u64 {
    if let Some(s) = v.downcast_ref::<CelString>() {
        s.inner().len() as u64
    } else if let Some(b) = v.downcast_ref::<CelBytes>() {
        b.inner().len() as u64
    } else {
        0
    }
}

/// The steps it takes to read all of `v`: one per value and per
/// [`BYTES_PER_STEP`] bytes of text. Counting stops once past `cap`, so
/// measuring never costs more than the meter has left.
fn size(v: &dyn Val, cap: u64) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<&dyn Val> = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(1 + text_len(v) / BYTES_PER_STEP);
        if let Some(l) = v.downcast_ref::<CelList>() {
            stack.extend(l.inner().iter().map(|x| &**x));
        } else if let Some(m) = v.downcast_ref::<CelMap>() {
            for (k, x) in m.inner() {
                stack.push(k.inner());
                stack.push(&**x);
            }
        }
        if total > cap {
            break;
        }
    }
    total
}
