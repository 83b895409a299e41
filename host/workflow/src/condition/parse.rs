//! One long-lived parse thread with a large stack: every expression is parsed, bounded and prepared there, so none can overflow a caller's stack and no executor thread waits on it.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::mpsc;

use cel::common::ast::IdedExpr;

use super::reads::{Key, Reads};
use super::{CompileError, ENV, MAX_COST, MAX_LEN, MAX_NESTING, MAX_NODES, MAX_TREE_DEPTH};
use super::{cost, reads};

/// The parse thread's stack. The parser bounds its own recursion to
/// [`MAX_NESTING`], but chains such as `a.b.c...` or `a[0][0]...` are loops
/// in the grammar that still recurse when the parse tree is visited: a
/// 2 KiB chain needs a few MiB, and this leaves an ample margin.
const STACK: usize = 64 << 20;

/// What the parse thread hands back: the tree as written and as metered,
/// and what it reads.
pub(super) struct Compiled {
    pub tree: IdedExpr,
    pub metered: IdedExpr,
    pub reads: BTreeMap<String, Reads>,
    pub variables: BTreeSet<String>,
    pub steps: BTreeSet<String>,
    pub nodes: u64,
    pub estimate: u64,
}

type Reply = Box<dyn FnOnce(Result<Compiled, CompileError>) + Send>;

struct Job {
    source: String,
    reply: Reply,
}

/// Hands `source` to the parse thread; `reply` is called there with the answer.
fn submit(source: &str, reply: Reply) -> Result<(), CompileError> {
    if source.len() > MAX_LEN {
        return Err(CompileError::TooLong { len: source.len() });
    }
    static QUEUE: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    let queue = QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("corral-cel-parse".into())
                .stack_size(STACK)
                .spawn(move || {
                    for job in rx {
                        let answer = catch_unwind(AssertUnwindSafe(|| prepare(&job.source)))
                            .unwrap_or(Err(CompileError::ParserFailed));
                        (job.reply)(answer);
                    }
                })
                .map(|_| tx)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CompileError::ParserUnavailable(e.clone()))?;
    queue
        .send(Job {
            source: source.to_owned(),
            reply,
        })
        .map_err(|_| CompileError::ParserUnavailable("the parse thread has stopped".into()))
}

/// Compiles on the parse thread; the caller awaits a channel, not a thread.
pub(super) async fn compile(source: &str) -> Result<Compiled, CompileError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(
        source,
        Box::new(move |answer| {
            let _ = tx.send(answer);
        }),
    )?;
    rx.await.unwrap_or(Err(CompileError::ParserFailed))
}

/// Compiles on the parse thread, blocking the caller until it answers.
pub(super) fn compile_blocking(source: &str) -> Result<Compiled, CompileError> {
    let (tx, rx) = mpsc::sync_channel(1);
    submit(
        source,
        Box::new(move |answer| {
            let _ = tx.send(answer);
        }),
    )?;
    rx.recv().unwrap_or(Err(CompileError::ParserFailed))
}

/// Parses and checks every bound; runs on the parse thread only, where the
/// tree may be walked recursively and dropped if it is refused.
fn prepare(source: &str) -> Result<Compiled, CompileError> {
    let parser = ENV.parser().max_recursion_depth(MAX_NESTING);
    let (tree, _) = parser.parse_with_source_info(source).map_err(|errors| {
        // The parser's own recursion bound; its message is the only sign.
        if errors
            .errors
            .iter()
            .any(|e| e.msg.contains("Recursion limit of"))
        {
            CompileError::TooNested
        } else {
            CompileError::Syntax(errors.to_string())
        }
    })?;
    let shape = cost::shape(&tree);
    if shape.depth > MAX_TREE_DEPTH {
        return Err(CompileError::TooDeep { depth: shape.depth });
    }
    if shape.nodes > MAX_NODES {
        return Err(CompileError::TooManyNodes { nodes: shape.nodes });
    }
    let estimate = cost::estimate(&tree);
    if estimate > MAX_COST {
        return Err(CompileError::TooCostly { estimate });
    }
    let reads = reads::collect(&tree);
    let variables = reads.keys().cloned().collect();
    let steps = reads
        .get("steps")
        .map(|r| {
            r.children
                .keys()
                .filter_map(|k| match k {
                    Key::Str(id) => Some(id.clone()),
                    Key::Int(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let metered = cost::instrument(&tree);
    Ok(Compiled {
        tree,
        metered,
        reads,
        variables,
        steps,
        nodes: shape.nodes as u64,
        estimate,
    })
}
