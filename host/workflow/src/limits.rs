//! The largest value every knob of a workflow file may take, in one place: validation enforces them, the scheduler may rely on them.
//!
//! A file is untrusted input. These maxima keep every number it sets far
//! from the points where host arithmetic overflows (`Instant + Duration`,
//! `Duration::from_secs_f64`, fuel sums) and from budgets nobody means.
//! README.md (Workflows, "Limits") lists them; keep the two in step.

use std::time::Duration;

const HOUR: u64 = 60 * 60;
const DAY: u64 = 24 * HOUR;

/// Bytes a workflow file may have; checked before it is parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Nesting a workflow file may have (mappings, sequences and flow brackets
/// together); checked by a linear pre-scan before the YAML parser runs.
pub const MAX_FILE_DEPTH: usize = 64;
/// Bytes of one `--param` value; checked before it is parsed.
pub const MAX_PARAM_BYTES: usize = 1 << 20;

/// Steps in a workflow.
pub const MAX_STEPS: usize = 1_000;
/// Agents a workflow declares.
pub const MAX_AGENTS: usize = 256;

/// Fuel of one call (`budget.fuel` of an agent or a step) and of a whole
/// run (`budget.fuel` at the top): 10^15 instructions, days of CPU.
pub const MAX_FUEL: u64 = 1_000_000_000_000_000;
/// Model tokens of one call and of a whole run (`budget.tokens`): 10^12.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// A run's artifact storage when `budget.artifact_bytes` is unset: 1 GiB.
pub const DEFAULT_ARTIFACT_BYTES: u64 = 1 << 30;
/// The most `budget.artifact_bytes` may be: 1 TiB.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 40;
/// A call's `http_requests`.
pub const MAX_HTTP_REQUESTS: u32 = 10_000;
/// A call's `http_request_bytes` and `http_response_bytes`.
pub const MAX_HTTP_BYTES: u64 = 1 << 30;
/// Agent calls at once, for the run and for a step's `for_each`.
pub const MAX_CONCURRENCY: u32 = 64;
/// A call's wall-clock `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(DAY);

/// `retry.max_attempts`, the first attempt included.
pub const MAX_ATTEMPTS: u32 = 20;
/// `retry.initial_delay` and `retry.max_delay`.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(HOUR);
/// `retry.backoff` lies in `MIN_BACKOFF..=MAX_BACKOFF` (and is finite).
pub const MIN_BACKOFF: f64 = 1.0;
pub const MAX_BACKOFF: f64 = 10.0;
/// `retry.jitter` lies in `0..=MAX_JITTER`.
pub const MAX_JITTER: f64 = 1.0;

/// `breaker.failure_threshold` and `breaker.success_threshold`.
pub const MAX_BREAKER_THRESHOLD: u32 = 1_000;
/// `breaker.cooldown`.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(DAY);

/// `repeat.max_iterations`.
pub const MAX_ITERATIONS: u32 = 20;
/// `max_items` of a `for_each` step, and its default.
pub const MAX_ITEMS: u32 = 10_000;
pub const DEFAULT_MAX_ITEMS: u32 = 100;

/// `approval.timeout`.
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(365 * DAY);
/// `cache.ttl`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(365 * DAY);

/// Delegated calls one step may make in all (`max_delegations`).
pub const MAX_DELEGATIONS: u32 = 10_000;
/// What `max_delegations` is when the file leaves it out.
pub const DEFAULT_DELEGATIONS: u32 = 64;
/// The deepest delegations may nest (`delegation_depth`).
pub const MAX_DELEGATION_DEPTH: u32 = 16;
/// What `delegation_depth` is when the file leaves it out.
pub const DEFAULT_DELEGATION_DEPTH: u32 = 4;
