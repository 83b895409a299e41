//! `/metrics`: runs and steps by status, agent and tenant, step time and fuel per agent, call slots and admission waits, breakers per agent, quota refusals, event streams and webhook deliveries, in the Prometheus text format (`prometheus-client`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use corral_workflow::report::RunReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub tenant: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub tenant: String,
    pub agent: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub tenant: String,
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub tenant: String,
    /// `delivered`, `retrying` or `failed` (given up).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub tenant: String,
    pub agent: String,
    /// The state it changed to: `open`, `half_open` or `closed`.
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub tenant: String,
    pub quota: String,
}

type Buckets = fn() -> Histogram;

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    pub runs_submitted: Family<TenantLabel, Counter>,
    pub runs_stopped: Family<RunLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub step_seconds: Family<AgentLabels, Histogram, Buckets>,
    pub step_fuel: Family<AgentLabels, Histogram, Buckets>,
    pub quota_refusals: Family<QuotaLabels, Counter>,
    pub calls_running: Family<TenantLabel, Gauge>,
    pub calls_waiting: Family<TenantLabel, Gauge>,
    pub fuel_window_charged: Family<TenantLabel, Gauge>,
    pub event_streams: Gauge,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub admission_wait: Family<TenantLabel, Histogram, Buckets>,
    pub breaker_changes: Family<BreakerLabels, Counter>,
    pub breakers_open: Family<AgentLabels, Gauge>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 10))
}

/// From 100 µs: most calls get a slot at once; a busy server makes them wait.
fn wait() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn fuel() -> Histogram {
    Histogram::new(exponential_buckets(10_000.0, 10.0, 8))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("corral"),
            runs_submitted: Family::default(),
            runs_stopped: Family::default(),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(seconds),
            step_fuel: Family::new_with_constructor(fuel),
            quota_refusals: Family::default(),
            calls_running: Family::default(),
            calls_waiting: Family::default(),
            fuel_window_charged: Family::default(),
            event_streams: Gauge::default(),
            webhook_deliveries: Family::default(),
            admission_wait: Family::new_with_constructor(wait),
            breaker_changes: Family::default(),
            breakers_open: Family::default(),
        };
        let r = &mut m.registry;
        r.register("runs_submitted", "Runs accepted", m.runs_submitted.clone());
        r.register(
            "runs_stopped",
            "Run sessions that stopped, by status",
            m.runs_stopped.clone(),
        );
        r.register("steps", "Steps that settled, by status", m.steps.clone());
        r.register(
            "step_seconds",
            "Wall-clock time of steps",
            m.step_seconds.clone(),
        );
        r.register("step_fuel", "Fuel used by steps", m.step_fuel.clone());
        r.register(
            "quota_refusals",
            "Requests refused by a spent quota",
            m.quota_refusals.clone(),
        );
        r.register(
            "calls_running",
            "Calls holding a call slot",
            m.calls_running.clone(),
        );
        r.register(
            "calls_waiting",
            "Calls waiting for a call slot",
            m.calls_waiting.clone(),
        );
        r.register(
            "fuel_window_charged",
            "Fuel charged to the tenant's current quota window",
            m.fuel_window_charged.clone(),
        );
        r.register(
            "event_streams",
            "Open event streams",
            m.event_streams.clone(),
        );
        r.register(
            "call_admission_wait_seconds",
            "Time calls waited for a call slot",
            m.admission_wait.clone(),
        );
        r.register(
            "breaker_changes",
            "Circuit breaker state changes, by agent and new state",
            m.breaker_changes.clone(),
        );
        r.register(
            "breakers_open",
            "Runs whose breaker for the agent is open now",
            m.breakers_open.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome",
            m.webhook_deliveries.clone(),
        );
        m
    }
}

impl Metrics {
    /// Counts what one session of a run did.
    pub fn run_stopped(&self, tenant: &str, report: &RunReport) {
        self.runs_stopped
            .get_or_create(&RunLabels {
                tenant: tenant.into(),
                status: report.status.name().into(),
            })
            .inc();
        // A run that stops with a breaker open no longer holds it open.
        for b in &report.breakers {
            if b.state.name() == "open" {
                self.breakers_open
                    .get_or_create(&AgentLabels {
                        tenant: tenant.into(),
                        agent: b.agent.clone(),
                    })
                    .dec();
            }
        }
        for s in report.steps.iter().filter(|s| s.attempts > 0) {
            let status = serde_json::to_value(s.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.steps
                .get_or_create(&StepLabels {
                    tenant: tenant.into(),
                    agent: s.agent.clone(),
                    status,
                })
                .inc();
            let agent = AgentLabels {
                tenant: tenant.into(),
                agent: s.agent.clone(),
            };
            self.step_seconds
                .get_or_create(&agent)
                .observe(s.wall_time_us as f64 / 1e6);
            self.step_fuel
                .get_or_create(&agent)
                .observe(s.fuel_used as f64);
        }
    }

    /// Follows a run's breakers as they change (called from its event sink).
    pub fn breaker(&self, tenant: &str, agent: &str, from: &str, to: &str) {
        self.breaker_changes
            .get_or_create(&BreakerLabels {
                tenant: tenant.into(),
                agent: agent.into(),
                to: to.into(),
            })
            .inc();
        let open = self.breakers_open.get_or_create(&AgentLabels {
            tenant: tenant.into(),
            agent: agent.into(),
        });
        match (from, to) {
            (_, "open") if from != "open" => {
                open.inc();
            }
            ("open", _) if to != "open" => {
                open.dec();
            }
            _ => {}
        }
    }

    /// Counts one webhook attempt by where it left its message.
    pub fn webhook(&self, tenant: &str, state: corral_store::DeliveryState) {
        let outcome = match state {
            corral_store::DeliveryState::Delivered => "delivered",
            corral_store::DeliveryState::Pending => "retrying",
            corral_store::DeliveryState::Failed => "failed",
        };
        self.webhook_deliveries
            .get_or_create(&DeliveryLabels {
                tenant: tenant.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn refused(&self, tenant: &str, quota: &str) {
        self.quota_refusals
            .get_or_create(&QuotaLabels {
                tenant: tenant.into(),
                quota: quota.into(),
            })
            .inc();
    }
}

/// `GET /metrics`; the gauges are read at scrape time.
pub async fn scrape(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let m = &st.metrics;
    for t in st.tenants.iter() {
        let label = TenantLabel {
            tenant: t.id.clone(),
        };
        let (running, waiting) = st.fair.load(&t.id);
        // Calls waiting for one of the tenant's slots shared across
        // processes wait too, before they reach this process's queue.
        let shared = st.calls.get(&t.id).map_or(0, |c| c.load().2);
        let waiting = waiting + shared as usize;
        m.calls_running
            .get_or_create(&label)
            .set(i64::from(running));
        m.calls_waiting.get_or_create(&label).set(waiting as i64);
        let (store, tenant) = (st.store.clone(), t.clone());
        let charged = tokio::task::spawn_blocking(move || {
            store.fuel_window(
                &tenant.id,
                tenant.quota.window,
                tenant.quota.fuel_per_window,
            )
        })
        .await;
        if let Ok(Ok(w)) = charged {
            m.fuel_window_charged
                .get_or_create(&label)
                .set(w.charged.min(i64::MAX as u64) as i64);
        }
    }
    m.event_streams
        .set(crate::events::OPEN_STREAMS.load(Ordering::Acquire) as i64);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
}
