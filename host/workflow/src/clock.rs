//! Saturating time arithmetic: no duration from a workflow file can overflow an `Instant` or a timestamp.
//!
//! Validation bounds every duration, but the library can be driven without
//! the validator, so the arithmetic itself never panics either.

use std::time::{Duration, Instant};

/// Far enough to mean "never" for a cooldown or a deadline, and small
/// enough to add to any `Instant` the process can see.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, or a point far in the future when that overflows.
pub fn instant_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(3600)))
        .unwrap_or(now)
}

/// `now_ms + d` in Unix milliseconds, saturating at `i64::MAX`.
pub fn ms_after(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds as a `Duration`: negative or NaN is zero, too large or infinite is `cap`.
pub fn secs_f64(secs: f64, cap: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert!(instant_after(now, Duration::MAX) > now);
        assert_eq!(ms_after(i64::MAX - 1, Duration::MAX), i64::MAX);
        assert_eq!(ms_after(1_000, Duration::from_millis(5)), 1_005);
        let cap = Duration::from_secs(10);
        assert_eq!(secs_f64(f64::INFINITY, cap), cap);
        assert_eq!(secs_f64(1e300, cap), cap);
        assert_eq!(secs_f64(f64::NAN, cap), Duration::ZERO);
        assert_eq!(secs_f64(-3.0, cap), Duration::ZERO);
        assert_eq!(secs_f64(1.5, cap), Duration::from_millis(1500));
    }
}
