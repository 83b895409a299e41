//! Paths of the agent components built from `plugins/` (see `build.rs`).

include!(concat!(env!("OUT_DIR"), "/agents.rs"));
