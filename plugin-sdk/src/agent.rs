//! The `Agent` trait and the glue that turns it into the WIT `guest` export.

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use crate::bindings::corral::agent::types::{AgentInfo, Capability};
use crate::packet::{InPacket, OutPacket};
use crate::{AgentError, Context};

/// A corral agent: typed input in, typed output out.
///
/// The host validates the input against `Input`'s JSON Schema before calling
/// [`Agent::run`] and validates the output against `Output`'s schema after,
/// so both schemas are part of the agent's contract. Document their fields:
/// doc comments become schema descriptions.
pub trait Agent: Default {
    /// The payload the agent accepts.
    type Input: DeserializeOwned + JsonSchema;
    /// The payload the agent returns.
    type Output: Serialize + JsonSchema;

    /// Capabilities the agent needs (environment variables, directories).
    /// The host refuses to call the agent unless every one is granted.
    fn capabilities() -> Vec<Capability> {
        Vec::new()
    }

    /// Handle one input.
    fn run(&self, ctx: &mut Context, input: Self::Input) -> Result<Self::Output, AgentError>;
}

/// The JSON Schema of `T` as JSON text.
fn schema_text<T: JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(T)).expect("a schema always serializes")
}

#[doc(hidden)]
pub fn describe<A: Agent>(name: &str, version: &str, description: &str) -> AgentInfo {
    AgentInfo {
        name: name.to_owned(),
        version: version.to_owned(),
        description: description.to_owned(),
        input_schema: schema_text::<A::Input>(),
        output_schema: schema_text::<A::Output>(),
        capabilities: A::capabilities(),
    }
}

#[doc(hidden)]
pub fn run<A: Agent>(
    packet: String,
) -> Result<String, crate::bindings::corral::agent::types::AgentError> {
    install_panic_hook();
    let packet: InPacket<A::Input> = serde_json::from_str(&packet).map_err(|e| {
        // The host validated the payload against our own schema, so this means
        // the schema and the Rust type disagree (a `#[serde]` attribute that
        // schemars does not see, for example).
        AgentError::permanent(format!(
            "the input packet does not fit the agent's input type: {e}"
        ))
    })?;
    let mut ctx = Context::new(&packet.run_id, &packet.step_id);
    let output = A::default().run(&mut ctx, packet.payload)?;
    let out = OutPacket {
        version: packet.version,
        run_id: &packet.run_id,
        step_id: &packet.step_id,
        payload: &output,
    };
    serde_json::to_string(&out)
        .map_err(|e| AgentError::permanent(format!("the output does not serialize: {e}")).into())
}

/// Print panics as one line `panicked at <location>: <message>` on stderr,
/// which the host captures and reports in its `GuestTrap` error.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "Box<dyn Any>".to_owned()
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "<unknown>".into());
            eprintln!("panicked at {location}: {message}");
        }));
    });
}
