//! Agent: relay's twin for kill tests; burns fuel, then holds the call until the test opens its gate file in the granted `/gates`, then delegates its `then` legs to itself.
//!
//! A test that kills a run "mid-call" must not race the call: the call
//! waits until `/gates/<gate>` exists, so the test can kill it there and
//! open the gate before resuming.

use corral_sdk::{Agent, AgentError, Capability, Context, DirRequest, JsonSchema, delegate};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Latch;

/// Text travelling along a chain.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Leg {
    pub text: String,
    /// Hops so far.
    #[serde(default)]
    pub hops: u32,
    /// Appended to the text.
    #[serde(default)]
    pub mark: String,
    /// Rounds of work to do first (about 10 fuel each).
    #[serde(default)]
    pub burn: u64,
    /// A file name in `/gates`: the call answers only once it exists.
    #[serde(default)]
    pub gate: String,
    /// Legs delegated to `latch` itself, all at once, once the gate is
    /// open; their texts are appended in order, each in brackets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Leg>,
}

#[derive(Serialize, JsonSchema)]
pub struct Relayed {
    pub text: String,
    pub hops: u32,
    /// What the burn computed, so it cannot be optimized away.
    pub checksum: u64,
}

impl Agent for Latch {
    type Input = Leg;
    type Output = Relayed;

    fn capabilities() -> Vec<Capability> {
        vec![Capability::Dir(DirRequest {
            guest_path: "/gates".into(),
            writable: false,
        })]
    }

    fn run(&self, ctx: &mut Context, leg: Leg) -> Result<Relayed, AgentError> {
        let mut acc: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..leg.burn {
            acc = std::hint::black_box(acc.rotate_left(7) ^ i).wrapping_mul(31);
        }
        if !leg.gate.is_empty() {
            let path = format!("/gates/{}", leg.gate);
            // Bounded by the call's own deadline.
            while std::fs::metadata(&path).is_err() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let mut text = format!("{}{}", leg.text, leg.mark);
        let requests: Vec<_> = leg
            .then
            .iter()
            .map(|l| delegate::request("latch", l, delegate::sub_budget()))
            .collect();
        for answer in ctx.delegate_all(&requests) {
            let answer = answer?;
            text = format!("{text}[{}]", answer["text"].as_str().unwrap_or(""));
        }
        Ok(Relayed {
            text,
            hops: leg.hops + 1,
            checksum: acc,
        })
    }
}

corral_sdk::export_agent!(Latch);
