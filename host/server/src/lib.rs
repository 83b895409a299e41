//! corral as a service: an HTTP API (`/v1`) where many tenants submit workflows, follow their events and register agents, each held to its own ceiling and quotas.
//!
//! A request meets, in order: the body limit and timeout (tower-http), the
//! bearer token ([`auth`]: which tenant), the tenant's quotas at the door
//! ([`quota`]), its scope ([`tenant::TenantScope`]: registered agents, its
//! data root, its secrets) while the workflow validates, and then a run
//! driver ([`driver`]) that journals to the shared store. Everything a client
//! reads back ([`runs`], [`events`], [`agents`]) is filtered by tenant; another
//! tenant's resource answers 404, exactly like a missing one.

pub mod agents;
pub mod api;
pub mod auth;
pub mod config;
pub mod driver;
pub mod events;
pub mod extract;
pub mod fair;
pub mod metrics;
pub mod problem;
pub mod quota;
pub mod run_view;
pub mod runs;
pub mod shared_calls;
pub mod state;
pub mod tenant;
pub mod token_window;
pub mod webhooks;
pub mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use corral_runtime::Runtime;
use corral_store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{ConfigError, ServerConfig};
pub use problem::{Kind, Problem};

use crate::driver::Drivers;
use crate::quota::Gates;
use crate::state::AppState;
use crate::tenant::Tenants;

/// The largest JSON request body: a workflow file at its limit plus params.
const MAX_JSON_BODY: usize = 4 << 20;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Which runs a process drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// The runs submitted to it, and up to `max_runs` claimed from the
    /// store: queued, woken by an answer, or left by a process that
    /// stopped or died.
    Here { max_runs: usize },
    /// None: it records runs and answers, and `corral worker` processes on
    /// the same store drive them (a resume that changes params or steps is
    /// still driven here).
    Workers,
}

impl Drive {
    /// Whether new runs and answered approvals are left to workers.
    pub fn by_workers(self) -> bool {
        self == Drive::Workers
    }
}

/// A server ready to run: state built, listener bound.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Prepares the directories and binds `listen`.
    pub async fn bind(
        config: ServerConfig,
        rt: Runtime,
        store: Arc<dyn Store>,
        listen: SocketAddr,
        drive: Drive,
    ) -> Result<Self, ServeError> {
        let state = prepare(config, rt, store, drive)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Self { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops admitting, lets running
    /// runs finish within the grace period and leaves the rest to the next
    /// start (or another process). Unless it leaves driving to workers, it
    /// first picks up what a stopped server left behind, then keeps
    /// claiming runs no live process drives.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let background = Background::start(&state).await;
        let stopping = state.stopping.clone();
        let app = router(state.clone());
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stopping.cancel();
            })
            .await?;
        background.stop(&state).await;
        Ok(())
    }
}

/// A process that drives runs and delivers webhooks, with no HTTP API:
/// `corral worker`, beside servers that share its store.
pub struct Worker {
    state: Arc<AppState>,
}

impl Worker {
    /// Prepares the directories; drives at most `max_runs` runs at once.
    pub fn new(
        config: ServerConfig,
        rt: Runtime,
        store: Arc<dyn Store>,
        max_runs: usize,
    ) -> Result<Self, ServeError> {
        let state = prepare(config, rt, store, Drive::Here { max_runs })?;
        Ok(Self { state })
    }

    /// Claims and drives runs until `shutdown` completes, then lets its runs
    /// finish within the grace period and gives the rest up, claimable at
    /// once by another process.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let state = self.state;
        let background = Background::start(&state).await;
        shutdown.await;
        state.stopping.cancel();
        background.stop(&state).await;
    }
}

/// What a process runs beside its API: the claim loop and webhook deliveries.
struct Background {
    claims: Option<tokio::task::JoinHandle<()>>,
    /// Renews the tenants' shared call slots until the runs are drained.
    renewals: (CancellationToken, Vec<tokio::task::JoinHandle<()>>),
    deliveries: CancellationToken,
    deliverer: tokio::task::JoinHandle<()>,
}

impl Background {
    async fn start(state: &Arc<AppState>) -> Self {
        webhooks::reconcile_at_start(state).await;
        let claims = match state.drive {
            Drive::Here { max_runs } => {
                Some(tokio::spawn(driver::claim_runs(state.clone(), max_runs)))
            }
            Drive::Workers => None,
        };
        // Webhooks outlive the listener: the runs that finish during the
        // grace period are announced too. What is left stays queued in the
        // store for the next start.
        let deliveries = CancellationToken::new();
        let deliverer = tokio::spawn(webhooks::deliver::run(state.clone(), deliveries.clone()));
        let stop_renewing = CancellationToken::new();
        let renewals = state
            .calls
            .values()
            .map(|c| tokio::spawn(c.clone().renew(stop_renewing.clone())))
            .collect();
        Self {
            claims,
            renewals: (stop_renewing, renewals),
            deliveries,
            deliverer,
        }
    }

    /// After `state.stopping` is cancelled: lets runs finish within the
    /// grace period, gives the rest up, then stops deliveries.
    async fn stop(self, state: &Arc<AppState>) {
        if let Some(c) = self.claims {
            let _ = c.await;
        }
        let left = state.drivers.drain(state.config.shutdown_grace).await;
        if left > 0 {
            tracing::warn!(
                left,
                "runs still running after the grace period were given up; the next process to claim runs resumes them"
            );
        }
        let (stop_renewing, renewals) = self.renewals;
        stop_renewing.cancel();
        for r in renewals {
            let _ = r.await;
        }
        self.deliveries.cancel();
        let _ = self.deliverer.await;
    }
}

/// The state every process role shares, its directories made.
fn prepare(
    config: ServerConfig,
    rt: Runtime,
    store: Arc<dyn Store>,
    drive: Drive,
) -> Result<Arc<AppState>, ServeError> {
    let components = config.state_dir.join("components");
    private_dir(&components)?;
    for t in &config.tenants {
        private_dir(&config.data_root.join(&t.id))?;
    }
    let tenants = Tenants::new(config.tenants.clone());
    let gates = Gates::new(&tenants, &store);
    let slots = config
        .call_slots
        .unwrap_or(rt.config().engine.max_instances)
        .min(rt.config().engine.max_instances);
    let fair = fair::Fair::new(
        slots as usize,
        tenants
            .iter()
            .map(|t| (t.id.clone(), t.quota.concurrent_calls))
            .collect(),
    );
    let fuel = tenants
        .iter()
        .map(|t| {
            let f = quota::TenantFuel::new(store.clone(), t.clone());
            (t.id.clone(), Arc::new(f))
        })
        .collect();
    let tokens = tenants
        .iter()
        .map(|t| {
            let pool = token_window::TenantTokens {
                store: store.clone(),
                tenant: t.clone(),
            };
            (t.id.clone(), Arc::new(pool))
        })
        .collect();
    let calls = tenants
        .iter()
        .map(|t| {
            let shared =
                shared_calls::SharedCalls::new(store.clone(), &t.id, t.quota.concurrent_calls);
            (t.id.clone(), shared)
        })
        .collect();
    Ok(Arc::new(AppState {
        fuel,
        calls,
        tokens,
        rt: Arc::new(rt),
        store,
        tenants,
        config,
        components,
        drive,
        drivers: Drivers::default(),
        gates,
        fair,
        metrics: metrics::Metrics::default(),
        webhooks: webhooks::Webhooks::default(),
        stopping: CancellationToken::new(),
    }))
}

fn private_dir(path: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServeError::Dir {
            path: path.display().to_string(),
            source,
        })
}

/// Every route. The request timeout covers a response's headers only, so
/// event streams outlive it; compression skips them (tower-http leaves
/// `text/event-stream` alone). Uploads read their body themselves, under the
/// tenant's own limit; JSON bodies are capped at [`MAX_JSON_BODY`].
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.config.request_timeout;
    Router::new()
        .route("/v1/runs", post(runs::submit).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/resume", post(runs::resume))
        .route("/v1/runs/{id}/steps/{step}/approve", post(runs::approve))
        .route("/v1/runs/{id}/steps/{step}/reject", post(runs::reject))
        .route("/v1/runs/{id}/events", get(events::events))
        .route("/v1/runs/{id}/deliveries", get(runs::deliveries))
        .route("/v1/agents", get(agents::list))
        .route(
            "/v1/agents/{name}",
            get(agents::get).put(agents::upload).delete(agents::delete),
        )
        .route("/v1/workflows", get(workflows::list))
        .route(
            "/v1/workflows/{name}",
            get(workflows::get).put(workflows::register),
        )
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    api::openapi_json(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_route))
        .fallback(|| async { Problem::new(Kind::NotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `/metrics`, behind the operator's metrics token when the config sets one.
async fn metrics_route(
    st: axum::extract::State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse as _;
    if !st.config.metrics_tokens.is_empty() {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| tenant::TokenHash::of(t.trim()));
        if !given.is_some_and(|h| st.config.metrics_tokens.contains(&h)) {
            return Err(Problem::new(
                Kind::Unauthorized,
                "`/metrics` needs a token listed in `server.metrics_tokens`",
            ));
        }
    }
    Ok(metrics::scrape(st).await.into_response())
}

async fn ready(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
) -> Result<&'static str, Problem> {
    if st.stopping.is_cancelled() {
        return Err(Problem::new(Kind::Unavailable, "shutting down"));
    }
    Ok("ready")
}
