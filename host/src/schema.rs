//! Compiled JSON Schemas of an agent's payloads, and violations that name the failing place.

use jsonschema::Validator;
use serde_json::Value;

use crate::error::PacketProblem;

/// One side of an agent's contract, compiled once at load.
pub struct PayloadSchema {
    source: Value,
    validator: Validator,
}

impl PayloadSchema {
    /// Compiles `source`; the error says why the schema itself is invalid.
    pub fn compile(source: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&source).map_err(|e| e.to_string())?;
        Ok(Self { source, validator })
    }

    /// The schema as the agent declared it.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Checks `payload`, reporting the first violation with its JSON Pointer.
    pub fn check(&self, payload: &Value) -> Result<(), PacketProblem> {
        // `is_valid` skips error construction on the hot, valid path.
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let err = match self.validator.validate(payload) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        Err(PacketProblem::Schema {
            pointer: err.instance_path().to_string(),
            keyword: err.kind().keyword().to_owned(),
            schema_path: err.schema_path().to_string(),
            message: err.to_string(),
        })
    }
}
