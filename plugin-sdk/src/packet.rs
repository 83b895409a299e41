//! The guest's view of the handoff packet envelope (`schemas/handoff-packet.json`).

use serde::{Deserialize, Serialize};

/// An incoming packet; the payload is deserialized straight into the agent's input type.
#[derive(Deserialize)]
pub(crate) struct InPacket<T> {
    pub version: u32,
    pub run_id: String,
    pub step_id: String,
    pub payload: T,
}

/// An outgoing packet echoing the run and step of the incoming one.
#[derive(Serialize)]
pub(crate) struct OutPacket<'a, T> {
    pub version: u32,
    pub run_id: &'a str,
    pub step_id: &'a str,
    pub payload: &'a T,
}
