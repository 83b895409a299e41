//! The per-call context: identifiers of the run and step, logging, progress, and model completions.

use crate::bindings::corral::agent::host;
use crate::{delegate, model};

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

    /// Asks the host for a completion. `request.model` is an alias the
    /// agent requested (`Capability::Model`) and was granted; the host
    /// holds the provider and its key, reserves `max_tokens` plus the
    /// prompt from every token budget, and cuts the request off at the
    /// call's deadline.
    pub fn complete(&self, request: &model::Request) -> Result<model::Response, model::ModelError> {
        crate::bindings::corral::agent::model::complete(request)
    }

    /// Calls `agent` (one of the step's `delegates`) with `input` under
    /// `budget`, carved from what this call has left, and returns its
    /// output payload; the callee's input and output are checked against
    /// its schemas. Whatever it does not use comes back to this call.
    pub fn delegate(
        &self,
        agent: &str,
        input: &impl serde::Serialize,
        budget: delegate::SubBudget,
    ) -> Result<serde_json::Value, delegate::DelegateError> {
        let request = delegate::request(agent, input, budget);
        let text = crate::bindings::corral::agent::delegate::call(&request)?;
        Ok(serde_json::from_str(&text).expect("the host checked the callee's output"))
    }

    /// Calls several agents at once and waits for all of them; the answers
    /// are in the order of `requests` (see [`delegate::request`]).
    pub fn delegate_all(
        &self,
        requests: &[delegate::Request],
    ) -> Vec<Result<serde_json::Value, delegate::DelegateError>> {
        crate::bindings::corral::agent::delegate::call_all(requests)
            .into_iter()
            .map(|r| r.map(|text| serde_json::from_str(&text).expect("checked by the host")))
            .collect()
    }

    /// One question, one answer: a system prompt and a user message to
    /// `alias`, the answer's text back.
    pub fn ask(
        &self,
        alias: &str,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<String, model::ModelError> {
        let message = |role, content: &str| model::Message {
            role,
            content: content.to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        let request = model::Request {
            model: alias.to_owned(),
            messages: vec![
                message(model::Role::System, system),
                message(model::Role::User, user),
            ],
            max_tokens,
            temperature: None,
            stop: Vec::new(),
            tools: Vec::new(),
            response_schema: None,
        };
        self.complete(&request).map(|r| r.message.content)
    }
}
