//! Agent: reads the `GREETING` variable and files under `/data`, both requested capabilities.

use corral_sdk::{Agent, AgentError, Capability, Context, DirRequest, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct EnvReader;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// A file name inside `/data` to read.
    pub file: String,
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    pub greeting: String,
    pub contents: String,
}

impl Agent for EnvReader {
    type Input = Input;
    type Output = Output;

    fn capabilities() -> Vec<Capability> {
        vec![
            Capability::Env("GREETING".into()),
            Capability::Dir(DirRequest {
                guest_path: "/data".into(),
                writable: false,
            }),
        ]
    }

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let greeting =
            std::env::var("GREETING").map_err(|_| AgentError::permanent("GREETING is not set"))?;
        let path = format!("/data/{}", input.file);
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| AgentError::permanent(format!("cannot read {path}: {e}")))?;
        Ok(Output { greeting, contents })
    }
}

corral_sdk::export_agent!(EnvReader);
