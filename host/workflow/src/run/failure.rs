//! Why a step or call failed, and which failures stop the whole run.

use corral_runtime::{CallError, ErrorClass};

/// Why a step (or one of its calls) failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub class: ErrorClass,
    pub message: String,
    pub(super) special: Special,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    None,
    WorkflowFuel,
    Cancelled,
    /// A human rejected the step: it fails, whatever its `on_error`.
    Rejected,
}

impl Failure {
    pub(super) fn permanent(kind: &str, message: String) -> Self {
        Self {
            kind: kind.into(),
            class: ErrorClass::Permanent,
            message,
            special: Special::None,
        }
    }

    pub(super) fn from_call(e: &CallError) -> Self {
        Self {
            kind: e.kind_name().into(),
            class: e.class(),
            message: e.to_string(),
            special: Special::None,
        }
    }

    /// The workflow's fuel pool cannot cover the call: the run stops.
    pub(super) fn workflow_fuel(message: String) -> Self {
        Self {
            kind: "workflow_fuel_exhausted".into(),
            class: ErrorClass::Permanent,
            message,
            special: Special::WorkflowFuel,
        }
    }

    pub(super) fn cancelled() -> Self {
        Self {
            kind: "cancelled".into(),
            class: ErrorClass::Permanent,
            message: "the run was cancelled".into(),
            special: Special::Cancelled,
        }
    }
}
