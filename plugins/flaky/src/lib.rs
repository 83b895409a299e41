//! Fixture: fails its first `fail_first` calls for a key, counting calls in the granted `/state` directory.

use corral_sdk::{Agent, AgentError, Capability, Context, DirRequest, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Flaky;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Calls are counted per key.
    pub key: String,
    /// How many calls fail before the first success.
    pub fail_first: u32,
    /// The class of the failures: `transient`, `permanent` or `degradable`.
    #[serde(default = "transient")]
    pub class: String,
    #[serde(default)]
    pub text: String,
}

fn transient() -> String {
    "transient".into()
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    /// Which call this was, from 1.
    pub call: u32,
    pub text: String,
}

impl Agent for Flaky {
    type Input = Input;
    type Output = Output;

    fn capabilities() -> Vec<Capability> {
        vec![Capability::Dir(DirRequest {
            guest_path: "/state".into(),
            writable: true,
        })]
    }

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let path = format!("/state/{}", input.key);
        let call = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        std::fs::write(&path, call.to_string())
            .map_err(|e| AgentError::permanent(format!("cannot write {path}: {e}")))?;
        if call <= input.fail_first {
            let message = format!("call {call} of key `{}` fails on purpose", input.key);
            return Err(match input.class.as_str() {
                "permanent" => AgentError::permanent(message),
                "degradable" => AgentError::degradable(message),
                _ => AgentError::transient(message),
            });
        }
        Ok(Output {
            call,
            text: input.text,
        })
    }
}

corral_sdk::export_agent!(Flaky);
