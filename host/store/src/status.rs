//! The stored statuses of runs and steps: enums end to end, stored as text and parsed on read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a stored run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A driver has it, or had it when it died (see [`RunRecord::is_interrupted`](super::RunRecord::is_interrupted)).
    Running,
    /// Approval steps wait for a human.
    Waiting,
    /// A step with `on_error: pause` failed; a human decides.
    Paused,
    Completed,
    Degraded,
    Failed,
    FuelExhausted,
    Cancelled,
}

/// Where a stored step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    #[default]
    Pending,
    Running,
    Waiting,
    Paused,
    Completed,
    Degraded,
    Failed,
    Skipped,
    Cancelled,
    Compensated,
    CompensationFailed,
}

macro_rules! text_enum {
    ($ty:ident, $what:literal, $($variant:ident => $text:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The text stored and printed: `fuel_exhausted`, ...
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(UnknownStatus { what: $what, found: other.to_owned() }),
                }
            }
        }
    };
}

text_enum!(RunState, "run",
    Running => "running",
    Waiting => "waiting",
    Paused => "paused",
    Completed => "completed",
    Degraded => "degraded",
    Failed => "failed",
    FuelExhausted => "fuel_exhausted",
    Cancelled => "cancelled",
);

text_enum!(StepState, "step",
    Pending => "pending",
    Running => "running",
    Waiting => "waiting",
    Paused => "paused",
    Completed => "completed",
    Degraded => "degraded",
    Failed => "failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
    Compensated => "compensated",
    CompensationFailed => "compensation_failed",
);

/// Where one webhook message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; another attempt is due at `next_ms`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed, or the endpoint left the config; no more tries.
    Failed,
}

text_enum!(DeliveryState, "webhook delivery",
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
);

/// A status text this version does not know: a store written by a newer corral, or damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} status `{found}` in the store")]
pub struct UnknownStatus {
    pub what: &'static str,
    pub found: String,
}

impl RunState {
    /// Whether the run stopped for good (as opposed to running, waiting or paused).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Completed
                | RunState::Degraded
                | RunState::Failed
                | RunState::FuelExhausted
                | RunState::Cancelled
        )
    }
}

impl StepState {
    /// A committed outcome a later session may reuse.
    pub fn is_outcome(self) -> bool {
        matches!(self, StepState::Completed | StepState::Degraded)
    }

    /// Nothing more will happen to it in this run (unless it is retried).
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            StepState::Pending | StepState::Running | StepState::Waiting | StepState::Paused
        )
    }

    /// Waiting for a human's answer.
    pub fn awaits_human(self) -> bool {
        matches!(self, StepState::Waiting | StepState::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("bogus".parse::<StepState>().is_err());
    }
}
