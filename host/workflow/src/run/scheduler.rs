//! The scheduler loop: which steps may start, which wait for a slot, and what a finished step unblocks.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::breaker::Breaker;
use crate::clock::ms_after;
use crate::condition::Binding;
use crate::events::Event;
use crate::model::Workflow;
use crate::report::{RunStatus, StepStatus};
use corral_runtime::Runtime;
use corral_store::{StepState, now_ms};

use super::approvals::{APPROVAL_POLL, stored_answers};
use super::board::{Board, finish_failed, skip};
use super::exec::{Exec, Scope, StepDone};
use super::failure::Failure;
use super::fuel::FuelPool;
use super::options::{Prior, Resume, RunOptions};
use super::readiness::{Ready, readiness, when_step};
use super::reuse::{Carried, carry_over, fingerprint};
use super::stats::Stats;

/// How a run halts early: its status and the reason.
pub(super) type Halt = Option<(RunStatus, String)>;

/// The state of one session of a run while it is driven.
pub(super) struct Scheduler {
    pub(super) exec: Arc<Exec>,
    pub(super) w: Arc<Workflow>,
    pub(super) started: Instant,
    resume: Resume,
    /// What earlier sessions left of each step, taken when the step is reached.
    pub(super) prior: Vec<Option<Prior>>,
    pub(super) board: Board,
    pub(super) halt: Halt,
    /// One step runs inline in this task: a chain then never crosses
    /// threads, which costs more than the step itself. Steps that become
    /// ready while it runs are spawned, so parallel steps still use every core.
    inline: FuturesUnordered<BoxFuture<'static, StepDone>>,
    set: JoinSet<StepDone>,
    task_step: HashMap<tokio::task::Id, usize>,
    dependents: Vec<Vec<usize>>,
    /// Steps whose readiness may have changed; steps are in dependency
    /// order, so taking the lowest first settles skips in one pass.
    candidates: BTreeSet<usize>,
    /// Ready steps waiting for a slot: no more steps run at once than the
    /// concurrency cap allows calls, so none sits spawned on the semaphore.
    deferred: BTreeSet<usize>,
    in_flight: usize,
    cancel_handled: bool,
    wait_mode: bool,
    pub(super) compensate_on_cancel: bool,
}

/// What woke the scheduler.
enum Wake {
    Done(StepDone),
    /// Time to look for approval answers.
    Poll,
    Cancelled,
}

impl Scheduler {
    pub(super) fn new(rt: Arc<Runtime>, w: Arc<Workflow>, mut opts: RunOptions) -> Self {
        let mut resume = opts.resume.take().unwrap_or_default();
        let spent = tokens_spent(&resume);
        let delegates = step_delegates(&rt, &w, &opts, &mut resume);
        let exec = Arc::new(Exec {
            rt,
            run_id: opts.run_id.clone(),
            params: opts.params,
            events: opts.events,
            cancel: opts.cancel.clone(),
            global: Semaphore::new(w.max_concurrency as usize),
            fuel: Mutex::new(FuelPool::new(w.fuel_budget, resume.fuel_charged)),
            // What earlier sessions' steps were charged stays spent.
            tokens: Arc::new(
                corral_runtime::model::MemoryPool::new(
                    "workflow token budget",
                    "budget.tokens",
                    w.token_budget,
                )
                .with_used(spent.values().sum()),
            ),
            outer_tokens: opts.token_pools.clone(),
            step_tokens: step_token_pools(&w, &spent),
            delegates,
            artifacts: opts.journal.as_ref().map(|j| {
                Arc::new(super::artifacts::RunArtifacts {
                    store: j.store().clone(),
                    run_id: opts.run_id.clone(),
                    limits: corral_store::ArtifactLimits {
                        run: w.artifact_budget,
                        tenant: opts.artifact_tenant_bytes,
                    },
                }) as Arc<_>
            }),
            breakers: w
                .agents
                .iter()
                .map(|(n, a)| (n.clone(), Breaker::new(a.breaker)))
                .collect(),
            rng: Mutex::new(fastrand::Rng::with_seed(opts.seed)),
            journal: opts.journal.clone(),
            cache_scope: opts.cache_scope.clone(),
            ledger: opts.ledger.clone(),
            admission: opts.admission.clone(),
            w: w.clone(),
        });
        announce_start(&exec, &w, &resume);
        let n = w.steps.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in w.steps.iter().enumerate() {
            for &d in &s.deps {
                dependents[d].push(i);
            }
        }
        Self {
            wait_mode: opts.wait_for_approvals && exec.journal.is_some(),
            compensate_on_cancel: opts.compensate_on_cancel,
            prior: w
                .steps
                .iter()
                .map(|s| resume.steps.get(&s.id).cloned())
                .collect(),
            board: Board::new(&w, &resume),
            exec,
            w,
            started: Instant::now(),
            resume,
            halt: None,
            inline: FuturesUnordered::new(),
            set: JoinSet::new(),
            task_step: HashMap::new(),
            dependents,
            candidates: (0..n).collect(),
            deferred: BTreeSet::new(),
            in_flight: 0,
            cancel_handled: false,
        }
    }

    /// Drives steps until none can move: all finished, the run halted, or
    /// only approvals remain (and the run does not wait for them).
    pub(super) async fn drive(&mut self) {
        loop {
            self.start_ready();
            if self.set.is_empty() && self.inline.is_empty() {
                if self.settle_when_idle().await {
                    continue;
                }
                if !self.waits_for_humans() {
                    break;
                }
            }
            match self.next_wake().await {
                Wake::Done(done) => self.on_done(done),
                Wake::Poll => {
                    let changed = self.settle_approvals().await;
                    self.unblock(changed);
                }
                Wake::Cancelled => self.on_cancel(),
            }
        }
    }

    fn waits_for_humans(&self) -> bool {
        self.wait_mode && self.halt.is_none() && !self.board.waiting.is_empty()
    }

    /// Nothing runs: applies stored answers, or notices a cancel. Returns
    /// whether a step changed, so the loop should look for ready steps again.
    async fn settle_when_idle(&mut self) -> bool {
        if self.halt.is_none() && !self.board.waiting.is_empty() {
            let changed = self.settle_approvals().await;
            if !changed.is_empty() {
                self.unblock(changed);
                return true;
            }
        }
        if self.halt.is_none() && self.exec.cancel.is_cancelled() {
            self.halt = Some((RunStatus::Cancelled, "the run was cancelled".into()));
        }
        false
    }

    /// Applies stored answers and expired deadlines to waiting steps.
    async fn settle_approvals(&mut self) -> Vec<usize> {
        if self.board.waiting.is_empty() {
            return Vec::new();
        }
        let answers = stored_answers(&self.exec).await;
        self.board
            .settle_approvals(&self.exec, &answers, &mut self.halt)
    }

    fn unblock(&mut self, changed: impl IntoIterator<Item = usize>) {
        for i in changed {
            self.candidates.extend(&self.dependents[i]);
        }
    }

    async fn next_wake(&mut self) -> Wake {
        let poll = self.waits_for_humans();
        let w = &self.w;
        let task_step = &self.task_step;
        tokio::select! {
            Some(done) = self.inline.next(), if !self.inline.is_empty() => Wake::Done(done),
            Some(joined) = self.set.join_next_with_id(), if !self.set.is_empty() => Wake::Done(match joined {
                Ok((_, done)) => done,
                Err(e) => {
                    let i = task_step[&e.id()];
                    let f = if e.is_cancelled() {
                        Failure::cancelled()
                    } else {
                        Failure::permanent("host", format!("step `{}` crashed the host task: {e}", w.steps[i].id))
                    };
                    StepDone { index: i, outcome: Err(f), stats: Stats::default() }
                }
            }),
            _ = tokio::time::sleep(APPROVAL_POLL), if poll => Wake::Poll,
            _ = self.exec.cancel.cancelled(), if !self.cancel_handled => Wake::Cancelled,
        }
    }

    fn on_cancel(&mut self) {
        self.cancel_handled = true;
        self.halt = Some((RunStatus::Cancelled, "the run was cancelled".into()));
        self.set.abort_all();
        // Dropping the inline step cancels its call too.
        self.inline.clear();
        self.board.cancel_running();
    }

    fn on_done(&mut self, done: StepDone) {
        let i = done.index;
        self.board.running[i] = false;
        self.in_flight -= 1;
        self.unblock([i]);
        // One slot freed: the first step waiting for one takes it.
        if let Some(d) = self.deferred.pop_first() {
            self.candidates.insert(d);
        }
        match done.outcome {
            Ok(v) => self.board.complete(&self.exec, i, Arc::new(v), done.stats),
            Err(f) => {
                let h = finish_failed(
                    &self.exec,
                    &self.w.steps[i],
                    &mut self.board,
                    i,
                    &f,
                    done.stats,
                );
                self.halt = self.halt.take().or(h);
            }
        }
    }

    /// Starts (or skips, reuses, or parks) every candidate that is ready.
    fn start_ready(&mut self) {
        while self.halt.is_none() {
            let Some(i) = self.candidates.pop_first() else {
                break;
            };
            if self.board.status[i] != StepStatus::Pending || self.board.running[i] {
                continue;
            }
            match readiness(&self.w.steps[i], &self.board.status, &self.board.running) {
                Ready::Wait => {}
                Ready::Skip(reason) => {
                    skip(&self.exec, &mut self.board, i, reason);
                    self.unblock([i]);
                }
                Ready::Go if self.in_flight >= self.w.max_concurrency as usize => {
                    self.deferred.insert(i);
                }
                Ready::Go => self.start(i),
            }
        }
    }

    /// The outputs of step `i`'s dependencies, as it sees them.
    fn scope_of(&self, i: usize) -> Scope {
        self.w.steps[i]
            .deps
            .iter()
            .map(|&d| {
                (
                    self.w.steps[d].id.clone(),
                    (self.board.status[d], self.board.outputs[d].clone()),
                )
            })
            .collect()
    }

    /// Fails step `i` with `f` and lets its dependents see that.
    fn fail(&mut self, i: usize, f: Failure) {
        let h = finish_failed(
            &self.exec,
            &self.w.steps[i],
            &mut self.board,
            i,
            &f,
            Stats::default(),
        );
        self.halt = self.halt.take().or(h);
        self.unblock([i]);
    }

    /// A ready step: its condition, what earlier sessions left, then an
    /// approval request or a task.
    fn start(&mut self, i: usize) {
        let step = &self.w.steps[i];
        let scope = self.scope_of(i);
        if let Some(cond) = &step.when {
            let lookup = |id: &str| Some(when_step(id, &scope));
            let vars = [
                ("params", Binding::Json(&self.exec.params)),
                ("steps", Binding::Steps(&lookup)),
            ];
            match cond.eval_with(&vars) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("`when: {}` was false", cond.source());
                    skip(&self.exec, &mut self.board, i, reason);
                    self.unblock([i]);
                    return;
                }
                Err(e) => {
                    let message = format!("step `{}`: when {e}", step.id);
                    self.fail(i, Failure::permanent("condition", message));
                    return;
                }
            }
        }
        if self.exec.journal.is_some() {
            self.board.fingerprints[i] = fingerprint(&self.exec, step, &scope, None);
        }
        let (base, deadline) = match self.prior[i].take() {
            None => (Stats::default(), None),
            Some(p) => {
                let forced = self.resume.force.contains(&step.id);
                let exec = &self.exec;
                match carry_over(exec, &mut self.board, i, &scope, p, forced, &mut self.halt) {
                    Carried::Settled => {
                        self.unblock([i]);
                        return;
                    }
                    Carried::Again { base, deadline } => (base, deadline),
                }
            }
        };
        if step.approval.is_some() {
            self.request_approval(i, &scope, deadline);
            return;
        }
        self.in_flight += 1;
        let e = Event::StepStarted {
            step: step.id.clone(),
        };
        self.board.emit(&self.exec, i, e);
        self.board.running[i] = true;
        let fut = self.exec.clone().run_step(i, scope, base);
        if self.inline.is_empty() {
            self.inline.push(Box::pin(fut));
        } else {
            let handle = self.set.spawn(fut);
            self.task_step.insert(handle.id(), i);
        }
    }

    /// An approval step waits for a human; `deadline` carries an earlier session's.
    fn request_approval(&mut self, i: usize, scope: &Scope, deadline: Option<i64>) {
        let step = &self.w.steps[i];
        let a = step.approval.as_ref().expect("only approval steps");
        let context = match self.exec.resolve(step, scope, &step.input, None, None) {
            Ok(v) => v,
            Err(f) => return self.fail(i, f),
        };
        let deadline = deadline.or(a.timeout.map(|t| ms_after(now_ms(), t)));
        self.board.waiting.insert(i, deadline);
        let e = Event::ApprovalRequested {
            step: step.id.clone(),
            prompt: a.prompt.clone(),
            schema: a.schema.clone(),
            context,
            deadline_ms: deadline,
        };
        self.board.emit(&self.exec, i, e);
    }
}

/// The run's first event of this session: started, or resumed.
fn announce_start(exec: &Exec, w: &Workflow, resume: &Resume) {
    if exec.journal.is_some() && resume.session > 1 {
        let interrupted = w
            .steps
            .iter()
            .filter(|s| {
                resume
                    .steps
                    .get(&s.id)
                    .is_some_and(|p| p.record.status == StepState::Running)
            })
            .map(|s| s.id.clone())
            .collect();
        exec.emit(Event::RunResumed {
            run_id: exec.run_id.clone(),
            session: resume.session,
            interrupted,
            changed_components: resume.changed_components.clone(),
            changed_params: resume.changed_params.clone(),
            params: exec.params.clone(),
        });
    } else {
        exec.emit(Event::RunStarted {
            run_id: exec.run_id.clone(),
            workflow: w.name.clone(),
            steps: w.steps.len(),
        });
    }
}

/// The tokens earlier sessions spent, by step: what each step's record was
/// charged and, for a step the last session left running, what its
/// completed delegated calls spent (the step reuses their answers without
/// charging them again, and its record never saw them).
fn tokens_spent(resume: &Resume) -> HashMap<String, u64> {
    let mut spent: HashMap<String, u64> = resume
        .steps
        .iter()
        .map(|(id, p)| (id.clone(), p.record.tokens_used))
        .collect();
    for (id, calls) in &resume.delegated {
        let t: u64 = calls.iter().map(|d| d.receipt.tokens_used()).sum();
        let e = spent.entry(id.clone()).or_default();
        *e = e.saturating_add(t);
    }
    spent
}

/// A token pool for each step that sets `tokens`, charged with what the
/// step's calls in earlier sessions used.
fn step_token_pools(
    w: &Workflow,
    spent: &HashMap<String, u64>,
) -> HashMap<String, Arc<dyn corral_runtime::model::TokenPool>> {
    w.steps
        .iter()
        .filter_map(|s| {
            let limit = s.token_budget?;
            let used = spent.get(&s.id).copied().unwrap_or(0);
            let pool = corral_runtime::model::MemoryPool::new(
                format!("step `{}` token budget", s.id),
                format!("steps[{}].tokens", s.index),
                limit,
            )
            .with_used(used);
            Some((s.id.clone(), Arc::new(pool) as Arc<_>))
        })
        .collect()
}

fn step_delegates(
    rt: &Arc<Runtime>,
    w: &Arc<Workflow>,
    opts: &RunOptions,
    resume: &mut Resume,
) -> HashMap<String, Arc<dyn corral_runtime::delegate::Delegates>> {
    w.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.delegates.is_empty())
        .map(|(i, s)| {
            let report = super::delegates::Report {
                journal: opts.journal.clone(),
                events: opts.events.clone(),
            };
            let earlier = resume.delegated.remove(&s.id).unwrap_or_default();
            let d = super::delegates::StepDelegates::new(
                rt.clone(),
                w.clone(),
                i,
                opts.run_id.clone(),
                report,
                earlier,
            );
            (s.id.clone(), Arc::new(d) as Arc<_>)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Prior, PriorDelegate};

    #[test]
    fn tokens_spent_counts_the_delegated_calls_a_killed_step_completed() {
        let prior = |tokens_used| Prior {
            record: corral_store::StepRecord {
                tokens_used,
                ..Default::default()
            },
            output: None,
        };
        let delegated = |model_tokens| PriorDelegate {
            component: "sha256:c".into(),
            input: "sha256:i".into(),
            output: Arc::new(serde_json::Value::Null),
            receipt: corral_runtime::Receipt {
                model_tokens,
                ..Default::default()
            },
        };
        let resume = Resume {
            steps: HashMap::from([("done".into(), prior(100)), ("killed".into(), prior(0))]),
            delegated: HashMap::from([("killed".into(), vec![delegated(30), delegated(12)])]),
            ..Default::default()
        };
        let spent = tokens_spent(&resume);
        assert_eq!(spent["done"], 100);
        assert_eq!(spent["killed"], 42);
    }
}
