//! The host side of contract 0.2.0's `model` interface: the guest's request lifted, checked and handed to the gateway under the call's token budget and deadline; the answer, or a typed error, lowered back.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::model::{self, Gateway, MemoryPool, ModelCallRecord, ModelError};
use crate::sandbox::HostState;
use crate::wit::since_v0_2_0::corral::agent::model as w;

/// What a call needs to ask for completions.
pub(crate) struct ModelCtx {
    pub gateway: Arc<Gateway>,
    /// The aliases the call was granted.
    pub granted: Vec<String>,
    /// The call's own token budget.
    pub tokens: Arc<MemoryPool>,
    /// The budgets around the call (step, workflow, tenant), innermost first.
    pub outer: Vec<Arc<dyn crate::model::TokenPool>>,
    pub deadline: Instant,
}

/// Links `corral:agent/model@0.2.0`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut model = linker.instance("corral:agent/model@0.2.0")?;
    model.func_wrap_async(
        "complete",
        |mut store: StoreContextMut<'_, HostState>, (req,): (w::Request,)| {
            Box::new(async move {
                let ctx = store.data().model.clone();
                // Waiting on the model holds an instance slot, not a place
                // among the calls running wasm.
                store.data_mut().cpu.leave();
                let (result, record) = complete(ctx, req).await;
                store.data_mut().cpu.enter().await;
                if let Some(r) = record {
                    store.data_mut().model_log.push(r);
                }
                Ok((result,))
            })
        },
    )?;
    Ok(())
}

async fn complete(
    ctx: Option<Arc<ModelCtx>>,
    req: w::Request,
) -> (Result<w::Response, w::ModelError>, Option<ModelCallRecord>) {
    let Some(ctx) = ctx else {
        let why =
            "this host has no model gateway configured (its operator sets providers and aliases)";
        return (Err(w::ModelError::NotGranted(why.into())), None);
    };
    let req = match lift(req) {
        Ok(r) => r,
        Err(e) => return (Err(w::ModelError::InvalidRequest(e)), None),
    };
    let mut pools: Vec<&dyn crate::model::TokenPool> = vec![&*ctx.tokens];
    pools.extend(ctx.outer.iter().map(|p| &**p));
    let (result, record) = ctx
        .gateway
        .complete(&req, &ctx.granted, &pools, ctx.deadline)
        .await;
    tracing::debug!(target: "corral::agent", alias = %record.alias, outcome = %record.outcome, tokens = record.charged_tokens, "model call");
    (result.map(lower).map_err(lower_error), Some(record))
}

/// The guest's request as the gateway takes it; JSON texts parsed.
fn lift(r: w::Request) -> Result<model::ModelRequest, String> {
    let json = |what: &str, text: &str| {
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    Ok(model::ModelRequest {
        model: r.model,
        messages: r.messages.into_iter().map(lift_message).collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        stop: r.stop,
        tools: r
            .tools
            .into_iter()
            .map(|t| {
                Ok(model::Tool {
                    parameters: json(&format!("tool `{}`'s parameters", t.name), &t.parameters)?,
                    name: t.name,
                    description: t.description,
                })
            })
            .collect::<Result<_, String>>()?,
        response_schema: r
            .response_schema
            .as_deref()
            .map(|s| json("the response schema", s))
            .transpose()?,
    })
}

fn lift_message(m: w::Message) -> model::Message {
    model::Message {
        role: match m.role {
            w::Role::System => model::Role::System,
            w::Role::User => model::Role::User,
            w::Role::Assistant => model::Role::Assistant,
            w::Role::Tool => model::Role::Tool,
        },
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| model::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn lower(r: model::ModelResponse) -> w::Response {
    w::Response {
        message: w::Message {
            role: match r.message.role {
                model::Role::System => w::Role::System,
                model::Role::User => w::Role::User,
                model::Role::Assistant => w::Role::Assistant,
                model::Role::Tool => w::Role::Tool,
            },
            content: r.message.content,
            tool_calls: r
                .message
                .tool_calls
                .into_iter()
                .map(|c| w::ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            tool_call_id: r.message.tool_call_id,
        },
        finish_reason: match r.finish_reason {
            model::FinishReason::Stop => w::FinishReason::Stop,
            model::FinishReason::Length => w::FinishReason::Length,
            model::FinishReason::ToolCalls => w::FinishReason::ToolCalls,
            model::FinishReason::ContentFilter => w::FinishReason::ContentFilter,
            model::FinishReason::Other => w::FinishReason::Other,
        },
        usage: r.usage.map(|u| w::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }),
    }
}

fn lower_error(e: ModelError) -> w::ModelError {
    let text = e.to_string();
    match e {
        ModelError::NotGranted { .. } | ModelError::UnknownAlias { .. } => {
            w::ModelError::NotGranted(text)
        }
        ModelError::TokenBudgetExhausted { .. } => w::ModelError::TokenBudgetExhausted(text),
        ModelError::RateLimited { .. } => w::ModelError::RateLimited(text),
        ModelError::Timeout { .. } => w::ModelError::Timeout(text),
        ModelError::Unavailable { .. } => w::ModelError::Unavailable(text),
        ModelError::BadRequest { .. } | ModelError::Malformed { .. } => {
            w::ModelError::BadRequest(text)
        }
        ModelError::InvalidRequest(_) => w::ModelError::InvalidRequest(text),
        ModelError::NotRecorded { .. } => w::ModelError::BadRequest(text),
    }
}
