//! The per-call context: identifiers of the run and step, logging and progress.

use crate::bindings::corral::agent::host;

pub use host::Level;

/// What an agent knows about the call it is serving, and its channel back to the host.
pub struct Context {
    run_id: String,
    step_id: String,
}

impl Context {
    pub(crate) fn new(run_id: &str, step_id: &str) -> Self {
        Self {
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
        }
    }

    /// The workflow run this call belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The step of the run this call serves.
    pub fn step_id(&self) -> &str {
        &self.step_id
    }

    /// Log a message with structured fields. The host caps log bytes per
    /// call; records beyond the cap are dropped and counted in the receipt.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        host::log(level, message, &fields);
    }

    /// Log at info level without fields.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, &[]);
    }

    /// Report progress, `percent` from 0 to 100.
    pub fn progress(&self, percent: u8, note: &str) {
        host::progress(percent.min(100), note);
    }
}
