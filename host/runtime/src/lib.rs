//! corral's sandbox: load agents as WebAssembly components and call them under hard budgets, with checked JSON handoffs.
//!
//! Data flows one way: an agent is loaded ([`Runtime::load`]: compile cache,
//! link, `describe`), then called ([`Runtime::call`]: policy check, input
//! check, sandboxed call under a [`Budget`], output check), and every call
//! yields a [`Receipt`].
//!
//! Modules depend on each other in one direction only, leaves first:
//! `wit`, `digest`, `display`, `human`, `budget`, `capability` → `error` →
//! `schema`, `packet`, `grants`, `capture` → `lift`, `surface`, `sandbox` →
//! `agent` → `describe`, `cache`, `receipt`, `inspect` → `runtime`. The model
//! gateway (`model`) is a leaf beside them; `model_host` links it into the
//! sandbox for agents of contract 0.2.0, and `contract` says which version
//! a component speaks. `http` is outbound HTTP: grants, the connect-time
//! address check, quotas and the hook `sandbox` installs.

pub mod agent;
pub mod artifact;
pub mod budget;
pub mod cache;
pub mod capability;
pub mod capture;
pub mod delegate;
pub mod describe;
pub mod digest;
pub mod display;
pub mod engine;
pub mod error;
pub mod grants;
pub mod http;
pub mod human;
pub mod inspect;
pub mod model;
pub mod packet;
pub mod receipt;
pub mod runtime;
pub mod schema;
pub mod wit;

mod artifact_host;
mod contract;
mod delegate_host;
mod gate;
mod lift;
mod model_host;
mod sandbox;
mod surface;

pub use agent::{Agent, AgentInfo};
pub use budget::Budget;
pub use cache::{CacheStats, default_cache_dir};
pub use capability::Capability;
pub use capture::LogRecord;
pub use describe::DescribeLimits;
pub use engine::EngineConfig;
pub use error::{CallError, Denial, ErrorClass, FailureKind, LoadError, PacketProblem};
pub use grants::{DirGrant, EnvGrant, Grants};
pub use packet::{ArtifactRef, HandoffPacket, PacketLimits};
pub use receipt::Receipt;
pub use runtime::{CallOutcome, Runtime, RuntimeConfig};
