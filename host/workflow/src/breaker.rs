//! Per-agent circuit breakers: closed, open for a cool-down after N consecutive failures, half-open trials.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::definition::BreakerDef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    half_open_successes: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
    transitions: Vec<(BreakerState, BreakerState)>,
}

/// One agent's breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerDef,
    inner: Mutex<Inner>,
}

/// The report of a breaker.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerReport {
    pub agent: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Every change, in order, as `from → to`.
    pub transitions: Vec<String>,
}

/// A state change to announce.
pub type Transition = Option<(BreakerState, BreakerState)>;

impl Breaker {
    pub fn new(cfg: BreakerDef) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                half_open_successes: 0,
                open_until: None,
                trial_in_flight: false,
                transitions: Vec::new(),
            }),
        }
    }

    /// May a call go ahead? `Ok(true)` when it is the half-open trial;
    /// `Err` carries how long the breaker stays open (zero while a trial runs).
    pub fn admit(&self, now: Instant) -> (Result<bool, Duration>, Transition) {
        let mut s = self.inner.lock().unwrap();
        match s.state {
            BreakerState::Closed => (Ok(false), None),
            BreakerState::Open => {
                let until = s.open_until.unwrap_or(now);
                if now < until {
                    return (Err(until - now), None);
                }
                let t = s.set(BreakerState::HalfOpen);
                s.trial_in_flight = true;
                (Ok(true), t)
            }
            BreakerState::HalfOpen if s.trial_in_flight => (Err(Duration::ZERO), None),
            BreakerState::HalfOpen => {
                s.trial_in_flight = true;
                (Ok(true), None)
            }
        }
    }

    /// Gives back an admission whose call says nothing about the agent's
    /// health (none was made, or the input was bad): a trial slot is freed
    /// without counting as a success or a failure.
    pub fn release(&self, trial: bool) {
        if trial {
            self.inner.lock().unwrap().trial_in_flight = false;
        }
    }

    /// Records the outcome of an admitted call (`trial` as `admit` said).
    pub fn record(&self, trial: bool, success: bool, now: Instant) -> Transition {
        let mut s = self.inner.lock().unwrap();
        if trial {
            s.trial_in_flight = false;
        }
        match (s.state, success) {
            // A call admitted while closed that ends during the trial does
            // not speak for the trial.
            (BreakerState::HalfOpen, _) if !trial => None,
            (BreakerState::Closed, true) => {
                s.consecutive_failures = 0;
                None
            }
            (BreakerState::Closed, false) => {
                s.consecutive_failures += 1;
                if s.consecutive_failures >= self.cfg.failure_threshold {
                    s.open_until = Some(super::clock::instant_after(now, self.cfg.cooldown.0));
                    s.set(BreakerState::Open)
                } else {
                    None
                }
            }
            (BreakerState::HalfOpen, true) => {
                s.half_open_successes += 1;
                if s.half_open_successes >= self.cfg.success_threshold {
                    s.consecutive_failures = 0;
                    s.set(BreakerState::Closed)
                } else {
                    None
                }
            }
            (BreakerState::HalfOpen, false) => {
                s.consecutive_failures += 1;
                s.open_until = Some(super::clock::instant_after(now, self.cfg.cooldown.0));
                s.set(BreakerState::Open)
            }
            // A call admitted just before the breaker opened.
            (BreakerState::Open, _) => None,
        }
    }

    pub fn report(&self, agent: &str) -> BreakerReport {
        let s = self.inner.lock().unwrap();
        BreakerReport {
            agent: agent.to_owned(),
            state: s.state,
            consecutive_failures: s.consecutive_failures,
            transitions: s
                .transitions
                .iter()
                .map(|(a, b)| format!("{} → {}", a.name(), b.name()))
                .collect(),
        }
    }
}

impl Inner {
    fn set(&mut self, to: BreakerState) -> Transition {
        let from = self.state;
        self.state = to;
        if to == BreakerState::HalfOpen {
            self.half_open_successes = 0;
        }
        self.transitions.push((from, to));
        Some((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Dur;

    #[test]
    fn opens_cools_down_and_closes() {
        let cfg = BreakerDef {
            failure_threshold: 2,
            cooldown: Dur(Duration::from_secs(10)),
            success_threshold: 2,
        };
        let b = Breaker::new(cfg);
        let t0 = Instant::now();
        assert_eq!(b.admit(t0).0, Ok(false));
        assert_eq!(b.record(false, false, t0), None);
        assert_eq!(
            b.record(false, false, t0),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(
            b.admit(t0 + Duration::from_secs(1)).0,
            Err(Duration::from_secs(9))
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            b.admit(later),
            (Ok(true), Some((BreakerState::Open, BreakerState::HalfOpen)))
        );
        // One trial at a time.
        assert_eq!(b.admit(later).0, Err(Duration::ZERO));
        // A call admitted before the breaker opened does not count as a trial.
        assert_eq!(b.record(false, true, later), None);
        assert_eq!(b.admit(later).0, Err(Duration::ZERO));
        assert_eq!(b.record(true, true, later), None);
        assert_eq!(b.admit(later).0, Ok(true));
        assert_eq!(
            b.record(true, true, later),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        // A failed trial opens it again.
        b.record(false, false, later);
        b.record(false, false, later);
        let again = later + Duration::from_secs(11);
        assert_eq!(b.admit(again).0, Ok(true));
        assert_eq!(
            b.record(true, false, again),
            Some((BreakerState::HalfOpen, BreakerState::Open))
        );
        assert_eq!(b.report("a").transitions.len(), 6);
    }
}
