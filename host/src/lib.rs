//! corral: run AI agents as sandboxed WebAssembly components under hard budgets, with validated JSON handoffs.
//!
//! Data flows one way: an agent is loaded ([`Runtime::load`]: compile cache,
//! link, `describe`), then called ([`Runtime::call`]: policy check, input
//! check, sandboxed call under a [`Budget`], output check), and every call
//! yields a [`Receipt`].

pub mod agent;
pub mod budget;
pub mod cache;
pub mod capture;
pub mod describe;
pub mod digest;
pub mod display;
pub mod engine;
pub mod error;
pub mod grants;
pub mod inspect;
pub mod packet;
pub mod receipt;
pub mod runtime;
pub mod schema;
pub mod store;
pub mod wit;
pub mod workflow;

mod sandbox;
mod surface;

pub use agent::{Agent, AgentInfo, Capability, ErrorClass};
pub use budget::Budget;
pub use cache::{CacheStats, default_cache_dir};
pub use capture::LogRecord;
pub use describe::DescribeLimits;
pub use engine::EngineConfig;
pub use error::{CallError, Denial, FailureKind, LoadError, PacketProblem};
pub use grants::{DirGrant, EnvGrant, Grants};
pub use packet::{ArtifactRef, HandoffPacket, PacketLimits};
pub use receipt::Receipt;
pub use runtime::{CallOutcome, Runtime, RuntimeConfig};
