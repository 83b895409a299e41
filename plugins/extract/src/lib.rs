//! Agent: asks the host's model (alias `fast`) for a summary and keywords of a text, as JSON checked against the output schema.

use corral_sdk::model::{Message, Request, Role};
use corral_sdk::{Agent, AgentError, Capability, Context, JsonSchema};
use serde::{Deserialize, Serialize};

/// The model alias this agent asks for; the operator maps it to a provider.
const ALIAS: &str = "fast";

#[derive(Default)]
pub struct Extract;

/// A text to summarize.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub text: String,
    /// The most completion tokens to ask for.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_max_tokens() -> u32 {
    256
}

/// What the model found.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extracted {
    pub summary: String,
    pub keywords: Vec<String>,
}

impl Agent for Extract {
    type Input = Input;
    type Output = Extracted;

    fn capabilities() -> Vec<Capability> {
        vec![Capability::Model(ALIAS.into())]
    }

    fn run(&self, ctx: &mut Context, input: Input) -> Result<Extracted, AgentError> {
        let schema = serde_json::to_string(&schemars::schema_for!(Extracted))
            .map_err(|e| AgentError::permanent(e.to_string()))?;
        let message = |role, content: &str| Message {
            role,
            content: content.to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        let request = Request {
            model: ALIAS.into(),
            messages: vec![
                message(
                    Role::System,
                    "Summarize the text in one sentence and list up to five keywords. Answer with JSON only: {\"summary\": string, \"keywords\": [string]}.",
                ),
                message(Role::User, &input.text),
            ],
            max_tokens: input.max_tokens,
            temperature: Some(0.0),
            stop: Vec::new(),
            tools: Vec::new(),
            response_schema: Some(schema),
        };
        let answer = ctx.complete(&request)?;
        serde_json::from_str(&answer.message.content).map_err(|e| {
            AgentError::permanent(format!(
                "the model's answer is not the JSON asked for ({e}): {}",
                answer.message.content.chars().take(200).collect::<String>()
            ))
        })
    }
}

corral_sdk::export_agent!(Extract);
