//! Agent: returns its input unchanged; the no-op the benchmarks and contract tests use.

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Echo;

/// Any text with optional tags; echoed back as is.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub text: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Agent for Echo {
    type Input = Message;
    type Output = Message;

    fn run(&self, _ctx: &mut Context, input: Message) -> Result<Message, AgentError> {
        Ok(input)
    }
}

corral_sdk::export_agent!(Echo);
