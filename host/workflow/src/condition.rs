//! CEL conditions (`when`, `until`) with the `cel` crate: parsed and bounded on one large-stack thread, evaluated under a cost meter over only the data they read.

mod activation;
mod cost;
mod parse;
mod reads;
pub mod typecheck;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::ast::IdedExpr;
use cel::{Context, Env};
use serde_json::Value;

pub use activation::{Binding, StepLookup};

use super::definition::WorkflowDef;

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 2048;
/// Deepest nesting the parser accepts: parentheses, lists, maps, call
/// arguments and conditionals each open a level. The parser counts it
/// itself, on the real tokens, so no quoting trick gets past it.
pub const MAX_NESTING: u16 = 24;
/// Deepest expression tree accepted after parsing (`a + a + ...` and
/// `a.b.c...` chains count too): evaluation recurses once per level.
pub const MAX_TREE_DEPTH: usize = 64;
/// Most operations (tree nodes, macros expanded) in one expression.
pub const MAX_NODES: usize = 512;
/// Most evaluation steps one condition may take: one step per operation,
/// per element a comprehension visits, and per value or 64 bytes of text an
/// operator reads. Checked as an estimate at validation, metered at run time.
pub const MAX_COST: u64 = 1_000_000;
/// Most JSON values one evaluation exposes to the expression: only the paths
/// it reads count. The static estimate assumes a list read from data has at
/// most this many elements.
pub const MAX_VALUES: u64 = 10_000;

/// Evaluation runs on a fresh stack of `EVAL_STACK` bytes unless the
/// caller's has `EVAL_RED_ZONE` left.
const EVAL_STACK: usize = 32 << 20;
const EVAL_RED_ZONE: usize = 16 << 20;

/// The standard library and macros, built once and shared by every parse
/// and evaluation. Optional syntax (`a.?b`) is off; the meter wraps call
/// targets, so `optional.of(x)` is an undeclared name, not a call.
static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(Env::stdlib().with_optional_support(false)));

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the expression is {len} bytes; the limit is {MAX_LEN}")]
    TooLong { len: usize },
    #[error(
        "the expression nests deeper than {MAX_NESTING} levels (parentheses, lists, maps, call arguments, conditionals); the limit is {MAX_NESTING}"
    )]
    TooNested,
    #[error("the expression is {depth} operations deep; the limit is {MAX_TREE_DEPTH}")]
    TooDeep { depth: usize },
    #[error("the expression has {nodes} operations; the limit is {MAX_NODES}")]
    TooManyNodes { nodes: usize },
    #[error(
        "the expression may take {estimate} evaluation steps, over the limit of {MAX_COST}: each `all`, `exists`, `exists_one`, `map` and `filter` runs its body once per element (up to {MAX_VALUES} for a list read from data), so do not nest them over data"
    )]
    TooCostly { estimate: u64 },
    #[error("invalid CEL: {0}")]
    Syntax(String),
    #[error("the CEL parser failed on this expression")]
    ParserFailed,
    #[error("cannot start the CEL parser: {0}")]
    ParserUnavailable(String),
}

/// Why an evaluation gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("`{expr}` must be true or false, but gave {got}")]
    NotBoolean { expr: String, got: String },
    #[error("`{expr}` failed: {message}")]
    Failed { expr: String, message: String },
    #[error(
        "`{expr}` took more than {MAX_COST} evaluation steps, the limit of a condition: read less data or avoid nested loops"
    )]
    CostExceeded { expr: String },
    #[error(
        "`{expr}` reads more than {MAX_VALUES} values (at `{path}`), the limit of a condition: read a narrower path"
    )]
    TooMuchData { expr: String, path: String },
    #[error("`{expr}`: the CEL interpreter failed on this expression")]
    Panicked { expr: String },
}

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    compiled: Arc<parse::Compiled>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Compiles on the parse thread and blocks this thread until it answers;
    /// async callers use [`Condition::compile_async`] or [`compile_all`].
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        let compiled = parse::compile_blocking(source)?;
        Ok(Self::new(source, compiled))
    }

    /// Compiles on the parse thread; the caller's task awaits it without
    /// holding an executor thread.
    pub async fn compile_async(source: &str) -> Result<Self, CompileError> {
        let compiled = parse::compile(source).await?;
        Ok(Self::new(source, compiled))
    }

    fn new(source: &str, compiled: parse::Compiled) -> Self {
        Self {
            source: source.to_owned(),
            compiled: Arc::new(compiled),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Top-level variables the expression reads (`params`, `steps`, ...).
    pub fn variables(&self) -> &BTreeSet<String> {
        &self.compiled.variables
    }

    /// Step ids read through `steps.<id>` or `steps["<id>"]`.
    pub fn steps(&self) -> &BTreeSet<String> {
        &self.compiled.steps
    }

    /// The static estimate of the steps one evaluation takes.
    pub fn estimated_cost(&self) -> u64 {
        self.compiled.estimate
    }

    /// The tree as written (macros expanded), for the type check.
    pub(crate) fn tree(&self) -> &IdedExpr {
        &self.compiled.tree
    }

    /// Evaluates with the given JSON variables; anything but a boolean is an error.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<bool, EvalError> {
        let bindings: Vec<(&str, Binding<'_>)> = vars
            .iter()
            .map(|(name, value)| (*name, Binding::Json(value)))
            .collect();
        self.eval_with(&bindings)
    }

    /// Evaluates with the given bindings. Only the paths the expression
    /// reads are turned into CEL values (strings are borrowed, not copied),
    /// and every step is metered against [`MAX_COST`].
    pub fn eval_with(&self, vars: &[(&str, Binding<'_>)]) -> Result<bool, EvalError> {
        let (values, _) = activation::build(&self.compiled.reads, &self.compiled.steps, vars)
            .map_err(|path| EvalError::TooMuchData {
                expr: self.source.clone(),
                path,
            })?;
        let meter = cost::Meter::new(MAX_COST.saturating_sub(self.compiled.nodes));
        let mut ctx = Context::with_env(Arc::clone(&ENV));
        meter.install(&mut ctx);
        for (name, value) in values {
            ctx.add_variable_as_val(name, value);
        }
        // The interpreter recurses once or twice per tree level, with frames
        // of tens of KiB in debug builds: a tree of MAX_TREE_DEPTH overflows
        // an executor thread's 2 MiB. It runs on a segment of its own.
        // A panic inside the interpreter is its bug, not the run's end.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stacker::maybe_grow(EVAL_RED_ZONE, EVAL_STACK, || {
                cel::Value::resolve(&self.compiled.metered, &ctx)
            })
        }))
        .map_err(|_| EvalError::Panicked {
            expr: self.source.clone(),
        })?;
        if meter.exceeded() {
            return Err(EvalError::CostExceeded {
                expr: self.source.clone(),
            });
        }
        match result {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError::NotBoolean {
                expr: self.source.clone(),
                got: format!("{other:?}"),
            }),
            Err(e) => Err(EvalError::Failed {
                expr: self.source.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Compiles every source on the parse thread, awaiting the answers; each
/// distinct source is parsed once.
pub async fn compile_all<'a>(
    sources: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, Result<Condition, CompileError>> {
    let mut out = HashMap::new();
    for source in sources {
        if !out.contains_key(source) {
            let compiled = Condition::compile_async(source).await;
            out.insert(source.to_owned(), compiled);
        }
    }
    out
}

/// Compiles every `when` and `repeat.until` of a workflow file.
pub async fn compile_workflow(
    def: &WorkflowDef,
) -> HashMap<String, Result<Condition, CompileError>> {
    // Collected first: an iterator of closures held across the await would
    // make the future fail `Send`'s higher-ranked check when spawned.
    let sources: Vec<&str> = def
        .steps
        .iter()
        .flat_map(|s| s.when.iter().chain(s.repeat.iter().map(|r| &r.until)))
        .map(String::as_str)
        .collect();
    compile_all(sources).await
}

#[cfg(test)]
mod tests;
