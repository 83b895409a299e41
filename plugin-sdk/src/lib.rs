//! The Rust SDK for corral agents: implement [`Agent`], call [`export_agent!`], build for `wasm32-wasip2`.
//!
//! An agent is a struct with typed input and output. The SDK derives the
//! agent's JSON Schemas from those types (with `schemars`), parses the handoff
//! packet the host sends, and wraps the result in the output packet. Authors
//! never see the WIT bindings.
//!
//! ```
//! use corral_sdk::{Agent, AgentError, Context, JsonSchema};
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts the words of a text.
//! #[derive(Default)]
//! pub struct WordCount;
//!
//! #[derive(Deserialize, JsonSchema)]
//! pub struct Input {
//!     /// The text to count.
//!     pub text: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! pub struct Output {
//!     pub words: usize,
//! }
//!
//! impl Agent for WordCount {
//!     type Input = Input;
//!     type Output = Output;
//!
//!     fn run(&self, ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
//!         if input.text.is_empty() {
//!             return Err(AgentError::permanent("nothing to count: `text` is empty"));
//!         }
//!         ctx.progress(100, "counted");
//!         Ok(Output { words: input.text.split_whitespace().count() })
//!     }
//! }
//!
//! corral_sdk::export_agent!(WordCount);
//! # fn main() {}
//! ```
//!
//! The agent's name, version and description come from its `Cargo.toml`
//! (`name`, `version`, `description`).

mod agent;
pub mod artifacts;
mod context;
mod error;
pub mod http;
mod packet;

pub use agent::Agent;
pub use context::{Context, Level};
pub use error::{AgentError, ErrorClass};
pub use schemars::JsonSchema;

/// The capabilities an agent may request in [`Agent::capabilities`].
pub use bindings::corral::agent::types::{Capability, DirRequest};

/// Completions from a model, made by the host for the agent (contract
/// 0.2.0): request an alias with `Capability::Model`, then call
/// [`Context::complete`] or [`Context::ask`].
pub mod model {
    pub use crate::bindings::corral::agent::model::{
        FinishReason, Message, ModelError, Request, Response, Role, Tool, ToolCall, Usage,
    };
}

/// Calls to other agents, made by the host for this agent (contract
/// 0.2.0): the step must grant the callee (`delegates: [name]`), and each
/// runs under a [`SubBudget`](delegate::SubBudget) carved from what this
/// call has left. Call [`Context::delegate`] or [`Context::delegate_all`].
pub mod delegate {
    pub use crate::bindings::corral::agent::delegate::{DelegateError, Request, SubBudget};

    /// A sub-budget that asks for nothing in particular: the callee gets
    /// its own limits, held to what the caller has left (in a batch, an
    /// equal share of the fuel). Set the fields to carve less.
    pub fn sub_budget() -> SubBudget {
        SubBudget {
            fuel: None,
            memory_bytes: None,
            timeout_ms: None,
            tokens: None,
        }
    }

    /// A request for [`Context::delegate_all`](crate::Context::delegate_all).
    pub fn request(agent: &str, input: &impl serde::Serialize, budget: SubBudget) -> Request {
        Request {
            agent: agent.to_owned(),
            payload: serde_json::to_string(input).expect("a Serialize value serializes"),
            budget,
        }
    }
}

/// The generated WIT bindings. Not part of the public API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/since_v0.2.0",
        world: "agent",
        pub_export_macro: true,
        export_macro_name: "__export_agent_bindings",
        default_bindings_module: "corral_sdk::bindings",
    });
}

/// Glue used by [`export_agent!`]. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::agent::{describe, run};
    pub use crate::bindings::exports::corral::agent::guest::{AgentError, AgentInfo, Guest};
}

/// Registers `$agent` (a type implementing [`Agent`] and [`Default`]) as the
/// component's export. Use it once per crate.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        #[doc(hidden)]
        struct __CorralExport;

        impl $crate::__private::Guest for __CorralExport {
            fn describe() -> $crate::__private::AgentInfo {
                $crate::__private::describe::<$agent>(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    env!("CARGO_PKG_DESCRIPTION"),
                )
            }

            fn run(packet: String) -> Result<String, $crate::__private::AgentError> {
                $crate::__private::run::<$agent>(packet)
            }
        }

        $crate::bindings::__export_agent_bindings!(__CorralExport with_types_in $crate::bindings);
    };
}
