//! Agent: appends a mark to its text and counts hops; can nap first or fail on request, for the durability tests.

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Relay;

/// Text travelling along a chain.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Leg {
    pub text: String,
    /// Hops so far.
    #[serde(default)]
    pub hops: u32,
    /// Appended to the text.
    #[serde(default)]
    pub mark: String,
    /// Milliseconds to nap before answering.
    #[serde(default)]
    pub ms: u64,
    /// Fail with a permanent error instead of answering.
    #[serde(default)]
    pub fail: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct Relayed {
    pub text: String,
    pub hops: u32,
}

impl Agent for Relay {
    type Input = Leg;
    type Output = Relayed;

    fn run(&self, _ctx: &mut Context, leg: Leg) -> Result<Relayed, AgentError> {
        if leg.ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(leg.ms));
        }
        if leg.fail {
            return Err(AgentError::permanent("asked to fail"));
        }
        Ok(Relayed {
            text: format!("{}{}", leg.text, leg.mark),
            hops: leg.hops + 1,
        })
    }
}

corral_sdk::export_agent!(Relay);
