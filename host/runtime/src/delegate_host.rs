//! The host side of contract 0.2.0's `delegate` interface: each request checked (granted, within depth and count), its budget carved from the caller's fuel, time and tokens, the callee called while the caller leaves its running place, the unused fuel refunded, and a record kept for the receipt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::delegate::{
    Asked, CallExtras, Callee, Delegation, DelegationOutcome, DelegationRecord, Left, carve,
    classify, tokens_left,
};
use crate::model::{MemoryPool, TokenPool};
use crate::sandbox::HostState;
use crate::wit::since_v0_2_0::corral::agent::delegate as w;
use crate::wit::since_v0_2_0::corral::agent::types as wt;
use crate::{CallError, ErrorClass, HandoffPacket};

/// What a call needs to delegate.
pub(crate) struct DelegateCtx {
    pub delegation: Delegation,
    /// The caller's own token budget, which its callees also draw on.
    pub tokens: Arc<MemoryPool>,
    /// The budgets around the caller.
    pub outer: Vec<Arc<dyn TokenPool>>,
    pub memory_limit: u64,
    pub deadline: Instant,
}

type Answer = Result<String, w::DelegateError>;

/// A request refused before any call: how, and why.
type Refusal = (DelegationOutcome, String);

/// Links `corral:agent/delegate@0.2.0`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut delegate = linker.instance("corral:agent/delegate@0.2.0")?;
    delegate.func_wrap_async(
        "call",
        |mut store: StoreContextMut<'_, HostState>, (req,): (w::Request,)| {
            Box::new(async move {
                let mut answers = delegate_all(&mut store, vec![req]).await?;
                Ok((answers.pop().expect("one answer per request"),))
            })
        },
    )?;
    delegate.func_wrap_async(
        "call-all",
        |mut store: StoreContextMut<'_, HostState>, (reqs,): (Vec<w::Request>,)| {
            Box::new(async move { Ok((delegate_all(&mut store, reqs).await?,)) })
        },
    )?;
    Ok(())
}

/// How a planned request was answered.
enum Done {
    Called(crate::CallOutcome),
    Reused(crate::delegate::Reused),
}

/// A request the host will make: its callee, packet and carved budget.
struct Planned {
    callee: Callee,
    packet: HandoffPacket,
    budget: crate::Budget,
}

async fn delegate_all(
    store: &mut StoreContextMut<'_, HostState>,
    reqs: Vec<w::Request>,
) -> wasmtime::Result<Vec<Answer>> {
    let Some(ctx) = store.data().delegate.clone() else {
        let why = "this call may not delegate: only an agent a workflow step runs with `delegates` may call other agents";
        return Ok(reqs
            .iter()
            .map(|_| Err(w::DelegateError::NotGranted(why.into())))
            .collect());
    };
    let now = Instant::now();
    let artifacts = store.data().artifacts.clone();
    let mut fuel_left = store.get_fuel()?;
    let share = fuel_left / reqs.len().max(1) as u64;
    let plans: Vec<(String, Result<Planned, Refusal>)> = reqs
        .into_iter()
        .map(|r| {
            let name = r.agent.clone();
            let planned = plan(&ctx, artifacts.as_deref(), r, &mut fuel_left, share, now);
            (name, planned)
        })
        .collect();
    // The carved fuel leaves the caller while its callees run.
    store.set_fuel(fuel_left)?;
    store.data_mut().cpu.leave();
    let depth = ctx.delegation.depth + 1;
    let calls = plans.iter().map(|(_, p)| {
        let ctx = &ctx;
        let artifacts = &artifacts;
        async move {
            let p = p.as_ref().ok()?;
            let delegates = &ctx.delegation.delegates;
            if let Some(r) = delegates.reuse(&p.callee, &p.packet) {
                return Some(Done::Reused(r));
            }
            let mut pools: Vec<Arc<dyn TokenPool>> = vec![ctx.tokens.clone()];
            pools.extend(ctx.outer.iter().cloned());
            let extras = CallExtras {
                pools,
                delegation: Some(Delegation {
                    delegates: delegates.clone(),
                    depth,
                }),
                artifacts: artifacts.as_ref().map(|a| a.store.clone()),
            };
            let out = delegates
                .call(&p.callee, &p.packet, &p.budget, extras)
                .await;
            Some(Done::Called(out))
        }
    });
    let outcomes = futures::future::join_all(calls).await;
    store.data_mut().cpu.enter().await;

    let mut refund = 0u64;
    let mut answers = Vec::with_capacity(plans.len());
    for ((agent, plan), outcome) in plans.into_iter().zip(outcomes) {
        let (answer, record) = match (plan, outcome) {
            (Err((outcome, why)), _) => (
                Err(refused(outcome, why.clone())),
                DelegationRecord {
                    agent,
                    depth,
                    fuel_carved: 0,
                    outcome,
                    error: Some(why),
                    receipt: None,
                },
            ),
            (Ok(p), Some(Done::Called(out))) => {
                refund += p.budget.fuel.saturating_sub(out.receipt.fuel_used);
                if let (Ok(answer), Some(call)) = (&out.result, &artifacts) {
                    call.allow_answer(&answer.payload);
                }
                finished(agent, depth, p.budget.fuel, out)
            }
            (Ok(p), Some(Done::Reused(r))) => {
                // Nothing ran: all that was carved comes back.
                refund += p.budget.fuel;
                if let Some(call) = &artifacts {
                    call.allow_answer(&r.payload);
                }
                let record = DelegationRecord {
                    agent,
                    depth,
                    fuel_carved: p.budget.fuel,
                    outcome: DelegationOutcome::Reused,
                    error: None,
                    receipt: Some(Box::new(r.receipt)),
                };
                (Ok(r.payload.to_string()), record)
            }
            (Ok(_), None) => unreachable!("every planned request is called"),
        };
        store.data_mut().delegations.push(record);
        answers.push(answer);
    }
    let now_left = store.get_fuel()?;
    store.set_fuel(now_left.saturating_add(refund))?;
    Ok(answers)
}

/// Checks one request and carves its budget from what is left.
fn plan(
    ctx: &DelegateCtx,
    artifacts: Option<&crate::artifact::CallArtifacts>,
    r: w::Request,
    fuel_left: &mut u64,
    share: u64,
    now: Instant,
) -> Result<Planned, Refusal> {
    let delegates = &ctx.delegation.delegates;
    let callee = delegates
        .callee(&r.agent)
        .map_err(|why| (DelegationOutcome::NotGranted, why))?;
    let (max_depth, field) = delegates.max_depth();
    if ctx.delegation.depth + 1 > max_depth {
        return Err((
            DelegationOutcome::LimitReached,
            format!(
                "delegating to `{}` would go {} levels deep; the limit is {max_depth} (`{field}`)",
                r.agent,
                ctx.delegation.depth + 1
            ),
        ));
    }
    let payload = serde_json::from_str(&r.payload).map_err(|e| {
        (
            DelegationOutcome::InvalidInput,
            format!("the payload for `{}` is not JSON: {e}", r.agent),
        )
    })?;
    // A caller passes on only the artifacts it may read itself.
    crate::artifact::check_references(
        &payload,
        &|d| Ok(artifacts.and_then(|a| a.readable(d))),
        "is not one this call received or wrote, so it cannot pass it on",
    )
    .map_err(|(pointer, why)| {
        (
            DelegationOutcome::InvalidInput,
            format!("the payload for `{}` at `{pointer}`: {why}", r.agent),
        )
    })?;
    delegates
        .claim()
        .map_err(|why| (DelegationOutcome::LimitReached, why))?;
    let left = Left {
        fuel: *fuel_left,
        deadline: ctx.deadline,
        memory: ctx.memory_limit,
        tokens: tokens_left(&ctx.tokens),
    };
    let asked = Asked {
        fuel: r.budget.fuel,
        memory: r.budget.memory_bytes,
        timeout: r.budget.timeout_ms.map(Duration::from_millis),
        tokens: r.budget.tokens,
    };
    let budget = carve(&callee.budget, asked, left, share, now);
    *fuel_left -= budget.fuel;
    Ok(Planned {
        packet: delegates.packet(payload),
        callee,
        budget,
    })
}

/// The answer and the record of a call that ran.
fn finished(
    agent: String,
    depth: u32,
    carved: u64,
    out: crate::CallOutcome,
) -> (Answer, DelegationRecord) {
    let (answer, outcome, error) = match out.result {
        Ok(packet) => (Ok(packet.payload.to_string()), DelegationOutcome::Ok, None),
        Err(e) => {
            let outcome = classify(&e);
            let text = match &e {
                CallError::FuelExhausted { .. }
                | CallError::MemoryLimit { .. }
                | CallError::DeadlineExceeded { .. } => format!(
                    "{e}; its limit was the sub-budget its caller carved (the delegate request's `budget`)"
                ),
                _ => e.to_string(),
            };
            let answer = match &e {
                CallError::Agent { class, message, .. } => {
                    Err(w::DelegateError::Failed(wt::AgentError {
                        class: match class {
                            ErrorClass::Transient => wt::ErrorClass::Transient,
                            ErrorClass::Permanent => wt::ErrorClass::Permanent,
                            ErrorClass::Degradable => wt::ErrorClass::Degradable,
                        },
                        message: message.clone(),
                    }))
                }
                _ => Err(refused(outcome, text.clone())),
            };
            (answer, outcome, Some(text))
        }
    };
    let record = DelegationRecord {
        agent,
        depth,
        fuel_carved: carved,
        outcome,
        error,
        receipt: Some(Box::new(out.receipt)),
    };
    (answer, record)
}

fn refused(outcome: DelegationOutcome, why: String) -> w::DelegateError {
    match outcome {
        DelegationOutcome::NotGranted => w::DelegateError::NotGranted(why),
        DelegationOutcome::InvalidInput => w::DelegateError::InvalidInput(why),
        DelegationOutcome::LimitReached => w::DelegateError::LimitReached(why),
        DelegationOutcome::Ok
        | DelegationOutcome::Reused
        | DelegationOutcome::Breached
        | DelegationOutcome::Failed => w::DelegateError::Breached(why),
    }
}
