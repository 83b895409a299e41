//! The runtime: loads agents (compile cache, link, describe) and runs calls with handoff checks on both sides.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::agent::Agent;
use crate::cache::{CacheStats, CompileCache};
use crate::capture::LogRecord;
use crate::contract::Contract;
use crate::describe::{Declared, DescribeLimits};
use crate::error::{CallError, LoadError, PacketProblem};
use crate::lift::OutputText;
use crate::packet::{HandoffPacket, PACKET_VERSION, PacketLimits, check_depth};
use crate::receipt::Receipt;
use crate::sandbox::{Beside, Export, HostState, Returned, Sandbox, Usage};
use crate::schema::PayloadSchema;
use crate::{Budget, EngineConfig, Grants};

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    pub engine: EngineConfig,
    /// Where precompiled components are kept; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    pub packet_limits: PacketLimits,
    /// The load budget: what `describe` may spend when an agent is loaded
    /// (the CLI's `--load-fuel`, `--load-memory`, `--load-timeout`).
    pub describe_budget: Budget,
    /// Bounds on what `describe` may declare, checked before its schemas
    /// are parsed or compiled.
    pub describe_limits: DescribeLimits,
    /// Host directories, besides a workflow file's own, under which a
    /// workflow may name components and granted directories
    /// (`corral --allow-path`; see `workflow::paths`).
    pub allowed_paths: Vec<PathBuf>,
    /// The model gateway agents of contract 0.2.0 reach through `model`;
    /// `None`: every model call is refused.
    pub models: Option<Arc<crate::model::Gateway>>,
}

impl RuntimeConfig {
    /// Defaults, with the disk cache in [`default_cache_dir`](crate::default_cache_dir).
    pub fn with_default_cache() -> Self {
        Self {
            cache_dir: crate::cache::default_cache_dir(),
            ..Self::default()
        }
    }
}

/// The result of one call: the output packet or a typed error, and always a receipt.
#[derive(Debug)]
pub struct CallOutcome {
    pub result: Result<HandoffPacket, CallError>,
    pub receipt: Receipt,
    /// Log records and output lines the agent produced, up to the log cap.
    pub logs: Vec<LogRecord>,
}

/// Loads and calls agents. One per process is enough: it shares one engine,
/// one linker, the compile cache and every loaded agent.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Arc<CompileCache>,
    /// Loaded agents by digest. A cell per digest makes concurrent loads of
    /// one component compile and describe it once.
    agents: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Agent>>>>>,
    /// One permit per slot of the instance pool, so that calls wait for a
    /// slot instead of failing when every slot is taken.
    admission: tokio::sync::Semaphore,
    /// Places for calls running wasm (`EngineConfig::max_running`).
    running: Arc<tokio::sync::Semaphore>,
    config: RuntimeConfig,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = crate::engine::build(&config.engine)?;
        let mut linker = Linker::new(&engine);
        crate::surface::add_to_linker(&mut linker)?;
        crate::sandbox::add_host_to_linker(&mut linker)?;
        let cache = Arc::new(CompileCache::new(config.cache_dir.as_deref(), &engine));
        Ok(Self {
            engine,
            linker,
            cache,
            agents: Mutex::new(HashMap::new()),
            admission: tokio::sync::Semaphore::new(config.engine.max_instances as usize),
            running: Arc::new(tokio::sync::Semaphore::new(
                config.engine.max_running.max(1) as usize,
            )),
            config,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Instance slots free right now; a call waits for one before it
    /// instantiates (`EngineConfig::max_instances` in all).
    pub fn idle_slots(&self) -> usize {
        self.admission.available_permits()
    }

    /// How many components were compiled, read from disk, or already loaded.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Loads the component at `path` as an agent.
    ///
    /// Reading, hashing, compiling (seconds for a Python or JavaScript
    /// agent) and checking the schemas run on tokio's blocking pool, never
    /// on the executor's threads; only `describe` runs on the executor, and
    /// it yields at every epoch tick like any call.
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Arc<Agent>, LoadError> {
        let path = path.as_ref().to_owned();
        let read_path = path.clone();
        let (bytes, digest) = blocking(move || {
            let bytes = std::fs::read(&read_path).map_err(|source| LoadError::Read {
                path: read_path.clone(),
                source,
            })?;
            check_header(&read_path, &bytes)?;
            let digest = crate::digest::digest(&bytes);
            Ok((Arc::new(bytes), digest))
        })
        .await?;
        self.load_digested(&path, bytes, digest).await
    }

    /// Loads `bytes` as an agent; `path` names it in errors.
    pub async fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Arc<Agent>, LoadError> {
        check_header(path, bytes)?;
        let bytes = Arc::new(bytes.to_vec());
        let digest = blocking({
            let bytes = bytes.clone();
            move || Ok(crate::digest::digest(&bytes))
        })
        .await?;
        self.load_digested(path, bytes, digest).await
    }

    async fn load_digested(
        &self,
        path: &Path,
        bytes: Arc<Vec<u8>>,
        digest: String,
    ) -> Result<Arc<Agent>, LoadError> {
        let cell = self
            .agents
            .lock()
            .unwrap()
            .entry(digest.clone())
            .or_default()
            .clone();
        if let Some(agent) = cell.get() {
            self.cache.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(agent.clone());
        }
        cell.get_or_try_init(|| self.load_new(path, bytes, digest))
            .await
            .cloned()
    }

    async fn load_new(
        &self,
        path: &Path,
        bytes: Arc<Vec<u8>>,
        digest: String,
    ) -> Result<Arc<Agent>, LoadError> {
        let limits = self.config.describe_limits;
        let (component, kept) = blocking({
            let (cache, engine) = (self.cache.clone(), self.engine.clone());
            let (path, digest) = (path.to_owned(), digest.clone());
            move || {
                let component = cache.component(&engine, &bytes, &digest, &path)?;
                Ok((component, cache.declared(&digest, &limits)?))
            }
        })
        .await?;
        check_world(&self.engine, path, &component)?;
        let pre = self.link(path, &component)?;
        let fresh = kept.is_none();
        let declared = match kept {
            Some(declared) => declared,
            None => self.describe(path, &pre).await?,
        };
        declared.check(path, &limits)?;
        let info = blocking({
            let (cache, path, digest) = (self.cache.clone(), path.to_owned(), digest.clone());
            move || {
                let kept = fresh.then(|| declared.clone());
                let info = declared.compile(&path, &limits)?;
                // Only an answer that passed every check is kept.
                if let Some(declared) = kept {
                    cache.keep_declared(&digest, &declared);
                }
                Ok(info)
            }
        })
        .await?;
        Ok(Arc::new(Agent {
            path: path.to_owned(),
            digest,
            component,
            pre,
            info,
        }))
    }

    /// Links `component` once, for every later call.
    fn link(&self, path: &Path, component: &Component) -> Result<Contract, LoadError> {
        let instance_pre =
            self.linker
                .instantiate_pre(component)
                .map_err(|e| LoadError::UnsupportedImports {
                    path: path.to_owned(),
                    reason: format!("{e:#}"),
                })?;
        let contract = Contract::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            path: path.to_owned(),
            expected: format!(
                "`{}` or `{}` with matching signatures ({e})",
                crate::wit::since_v0_2_0::GUEST_EXPORT,
                crate::wit::since_v0_1_0::GUEST_EXPORT
            ),
            found: export_names(&self.engine, component),
        })?;
        // wasi:http came with contract 0.2.0; a 0.1.0 agent never had it.
        if contract.version() == "0.1.0" {
            let ty = component.component_type();
            if let Some((name, _)) = ty
                .imports(&self.engine)
                .find(|(name, _)| name.starts_with("wasi:http/"))
            {
                return Err(LoadError::UnsupportedImports {
                    path: path.to_owned(),
                    reason: format!(
                        "`{name}`: outbound HTTP needs contract 0.2.0 (`corral:agent/guest@0.2.0`); this agent implements 0.1.0"
                    ),
                });
            }
        }
        Ok(contract)
    }

    /// Calls `describe` under the load budget, with no grants.
    async fn describe(&self, path: &Path, pre: &Contract) -> Result<Declared, LoadError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (result, _usage) = self
            .sandbox()
            .invoke(
                &name,
                pre,
                Export::Describe,
                &self.config.describe_budget,
                &Grants::default(),
                Default::default(),
            )
            .await;
        match result {
            Ok(Returned::Info(info)) => Ok(info),
            Ok(Returned::Run(_)) => unreachable!("describe returns agent info"),
            Err(e) => Err(LoadError::Describe {
                path: path.to_owned(),
                cause: Box::new(e),
            }),
        }
    }

    fn sandbox(&self) -> Sandbox<'_> {
        Sandbox {
            engine: &self.engine,
            max_stack: self.config.engine.max_wasm_stack,
            admission: &self.admission,
            running: &self.running,
            running_places: self.config.engine.max_running.max(1),
            slots: self.config.engine.max_instances,
            models: self.config.models.as_ref(),
        }
    }

    /// Calls `agent` with `packet` under `budget` and `grants`.
    ///
    /// The payload is checked against the agent's input schema before the
    /// call and the output against its output schema after; no unchecked
    /// data leaves this function.
    pub async fn call(
        &self,
        agent: &Agent,
        packet: &HandoffPacket,
        budget: &Budget,
        grants: &Grants,
    ) -> CallOutcome {
        self.call_pooled(agent, packet, budget, grants, Vec::new())
            .await
    }

    /// [`call`](Self::call), with the token budgets that enclose this call
    /// (a step's, a workflow's, a tenant's): each model request reserves
    /// from the call's own `budget.tokens` and from every one of `pools`.
    pub async fn call_pooled(
        &self,
        agent: &Agent,
        packet: &HandoffPacket,
        budget: &Budget,
        grants: &Grants,
        pools: Vec<Arc<dyn crate::model::TokenPool>>,
    ) -> CallOutcome {
        let extras = crate::delegate::CallExtras {
            pools,
            ..Default::default()
        };
        self.call_with(agent, packet, budget, grants, extras).await
    }

    /// [`call_pooled`](Self::call_pooled), with everything a call may get
    /// besides: the pools around it and whom it may delegate to.
    pub async fn call_with(
        &self,
        agent: &Agent,
        packet: &HandoffPacket,
        budget: &Budget,
        grants: &Grants,
        extras: crate::delegate::CallExtras,
    ) -> CallOutcome {
        let name = agent.name();
        let mut receipt = Receipt {
            agent: name.to_owned(),
            fuel_limit: budget.fuel,
            memory_limit_bytes: budget.memory_bytes,
            timeout_ms: budget.timeout.as_millis() as u64,
            ..Receipt::default()
        };
        let fail = |receipt: Receipt, e: CallError| CallOutcome {
            result: Err(e),
            receipt,
            logs: Vec::new(),
        };

        if !Engine::same(agent.component.engine(), &self.engine) {
            let message =
                "the agent was loaded by another runtime; load and call it with the same `Runtime`"
                    .to_owned();
            return fail(
                receipt,
                CallError::Host {
                    agent: name.into(),
                    message,
                },
            );
        }
        let denied = grants.denials(&agent.info.capabilities);
        if !denied.is_empty() {
            return fail(
                receipt,
                CallError::PolicyDenied {
                    agent: name.into(),
                    denied,
                },
            );
        }
        // The agent gets only what it requested; other grants are withheld.
        let grants = &grants.for_agent(&agent.info.capabilities);
        receipt.granted = grants.capabilities();
        if budget.memory_bytes > self.config.engine.max_memory_bytes {
            let message = format!(
                "the memory budget of {} bytes exceeds the engine's maximum of {} bytes",
                budget.memory_bytes, self.config.engine.max_memory_bytes
            );
            return fail(
                receipt,
                CallError::Host {
                    agent: name.into(),
                    message,
                },
            );
        }
        let text = match self.check_input(agent, packet) {
            Ok(text) => text,
            Err(problem) => {
                if let PacketProblem::TooLarge { actual, .. } = problem {
                    receipt.bytes_in = actual;
                }
                return fail(
                    receipt,
                    CallError::InvalidInput {
                        agent: name.into(),
                        problem,
                    },
                );
            }
        };
        receipt.bytes_in = text.len() as u64;
        let artifacts = match artifacts_in(packet, extras.artifacts.clone()) {
            Ok(a) => a,
            Err(problem) => {
                return fail(
                    receipt,
                    CallError::InvalidInput {
                        agent: name.into(),
                        problem,
                    },
                );
            }
        };

        let (result, usage) = self
            .sandbox()
            .invoke(
                name,
                &agent.pre,
                Export::Run(text),
                budget,
                grants,
                Beside {
                    extras,
                    artifacts: artifacts.clone(),
                },
            )
            .await;
        let Usage {
            fuel_used,
            peak_memory,
            wall,
            deadline,
            capture,
            progress,
            model_log,
            delegations,
            http_calls,
            http_calls_dropped,
            http_refused,
        } = usage;
        receipt.model_calls = model_log.records;
        receipt.model_calls_dropped = model_log.dropped;
        receipt.model_tokens = model_log.charged;
        receipt.delegations = delegations;
        receipt.http_calls = http_calls;
        receipt.http_calls_dropped = http_calls_dropped;
        receipt.fuel_used = fuel_used;
        receipt.peak_memory_bytes = peak_memory;
        receipt.wall_time_us = wall.as_micros() as u64;
        receipt.log_bytes = capture.kept;
        receipt.log_bytes_dropped = capture.dropped;
        receipt.log_records_dropped = capture.records_dropped;
        receipt.progress = progress;
        let logs = capture.records;

        let result = match result {
            Err(e) => Err(e),
            Ok(Returned::Info(_)) => unreachable!("run returns a packet"),
            Ok(Returned::Run(Err(e))) => Err(CallError::Agent {
                agent: name.into(),
                class: e.class.into(),
                message: e.message.0,
            }),
            // Measured in guest memory and never copied.
            Ok(Returned::Run(Ok(OutputText::TooLarge { bytes }))) => {
                receipt.bytes_out = bytes;
                Err(CallError::OutputTooLarge {
                    agent: name.into(),
                    limit: budget.max_output_bytes,
                    actual: bytes,
                })
            }
            Ok(Returned::Run(Ok(OutputText::Text(out)))) => {
                receipt.bytes_out = out.len() as u64;
                self.check_output(agent, packet, out, budget, deadline)
                    .await
                    .and_then(|p| {
                        artifacts_out(&p, artifacts.as_deref()).map_err(|problem| {
                            CallError::InvalidOutput {
                                agent: name.into(),
                                problem,
                            }
                        })?;
                        Ok(p)
                    })
            }
        };
        let result = result.map_err(|e| blame_http_policy(e, &http_refused));
        CallOutcome {
            result,
            receipt,
            logs,
        }
    }

    /// Validates the input packet and returns its JSON text.
    fn check_input(&self, agent: &Agent, packet: &HandoffPacket) -> Result<String, PacketProblem> {
        let limits = self.config.packet_limits;
        check_envelope(packet)?;
        check_depth(&packet.payload, limits.max_depth)?;
        agent.info.input_schema.check(&packet.payload)?;
        let text = serde_json::to_string(packet).expect("packets always serialize");
        if text.len() as u64 > limits.max_bytes {
            return Err(PacketProblem::TooLarge {
                limit: limits.max_bytes,
                actual: text.len() as u64,
            });
        }
        Ok(text)
    }

    /// Validates what the agent returned against the envelope and its
    /// output schema, within what is left of the call's deadline.
    ///
    /// The text is at most the output cap (the lift copied nothing larger),
    /// so parsing it holds the text and one `Value`. A large output is
    /// checked on a blocking thread, so the executor is never held up; if
    /// the deadline passes first the call is `DeadlineExceeded` (the thread
    /// finishes and its work is dropped).
    async fn check_output(
        &self,
        agent: &Agent,
        input: &HandoffPacket,
        out: String,
        budget: &Budget,
        deadline: Instant,
    ) -> Result<HandoffPacket, CallError> {
        let check = OutputCheck {
            agent: agent.name().to_owned(),
            run_id: input.run_id.clone(),
            step_id: input.step_id.clone(),
            max_depth: self.config.packet_limits.max_depth,
            schema: agent.info.output_schema.clone(),
        };
        check.run_until(out, deadline).await.unwrap_or_else(|| {
            Err(CallError::DeadlineExceeded {
                agent: agent.name().into(),
                limit: budget.timeout,
            })
        })
    }
}

/// Outputs up to this size are checked inline: it takes microseconds.
const INLINE_CHECK_BYTES: usize = 64 << 10;

/// Everything the output check needs, owned, so it can run on another thread.
struct OutputCheck {
    agent: String,
    run_id: String,
    step_id: String,
    max_depth: usize,
    schema: Arc<PayloadSchema>,
}

impl OutputCheck {
    /// Checks `out`, on a blocking thread when it is large; `None` when the
    /// deadline passes first.
    async fn run_until(
        self,
        out: String,
        deadline: Instant,
    ) -> Option<Result<HandoffPacket, CallError>> {
        let agent = self.agent.clone();
        let result = if out.len() <= INLINE_CHECK_BYTES {
            self.run(out)
        } else {
            let task = tokio::task::spawn_blocking(move || self.run(out));
            let until = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(until, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(join)) => Err(CallError::Host {
                    agent,
                    message: format!("the output check failed: {join}"),
                }),
                Err(_elapsed) => return None,
            }
        };
        (Instant::now() <= deadline).then_some(result)
    }

    fn run(&self, out: String) -> Result<HandoffPacket, CallError> {
        let invalid = |problem| CallError::InvalidOutput {
            agent: self.agent.clone(),
            problem,
        };
        let parsed = serde_json::from_str::<HandoffPacket>(&out);
        drop(out);
        let packet = parsed.map_err(|e| {
            invalid(match e.classify() {
                serde_json::error::Category::Data => PacketProblem::Envelope {
                    message: e.to_string(),
                },
                _ => PacketProblem::Json {
                    message: e.to_string(),
                },
            })
        })?;
        check_envelope(&packet).map_err(invalid)?;
        if packet.run_id != self.run_id || packet.step_id != self.step_id {
            return Err(invalid(PacketProblem::Envelope {
                message: format!(
                    "the output packet is for run `{}` step `{}`, but the input was for run `{}` step `{}`",
                    packet.run_id, packet.step_id, self.run_id, self.step_id
                ),
            }));
        }
        check_depth(&packet.payload, self.max_depth).map_err(invalid)?;
        self.schema.check(&packet.payload).map_err(invalid)?;
        Ok(packet)
    }
}

/// The call's artifacts: the references in its input, each checked against
/// the run's store, become what it may read. A packet that names an
/// artifact needs a store.
fn artifacts_in(
    packet: &HandoffPacket,
    store: Option<Arc<dyn crate::artifact::ArtifactStore>>,
) -> Result<Option<Arc<crate::artifact::CallArtifacts>>, PacketProblem> {
    use crate::artifact::{CallArtifacts, check_references, references};
    let Some(store) = store else {
        return match references(&packet.payload).into_iter().next() {
            Some((pointer, _)) => Err(PacketProblem::Artifact {
                pointer,
                message: crate::artifact::NO_STORE.into(),
            }),
            None => Ok(None),
        };
    };
    let call = CallArtifacts::new(store);
    let found = check_references(
        &packet.payload,
        &|d| call.store.stat(d),
        "is not held by this run",
    )
    .map_err(|(pointer, message)| PacketProblem::Artifact { pointer, message })?;
    for a in found {
        call.allow(a);
    }
    Ok(Some(Arc::new(call)))
}

/// Every artifact an output names must be one the call received or wrote.
fn artifacts_out(
    packet: &HandoffPacket,
    call: Option<&crate::artifact::CallArtifacts>,
) -> Result<(), PacketProblem> {
    let known = |d: &str| Ok(call.and_then(|c| c.readable(d)));
    crate::artifact::check_references(
        &packet.payload,
        &known,
        "is not one this call received or wrote",
    )
    .map(|_| ())
    .map_err(|(pointer, message)| PacketProblem::Artifact { pointer, message })
}

fn check_envelope(packet: &HandoffPacket) -> Result<(), PacketProblem> {
    if packet.version != PACKET_VERSION {
        return Err(PacketProblem::Envelope {
            message: format!(
                "packet version {} is not supported (expected {PACKET_VERSION})",
                packet.version
            ),
        });
    }
    // The envelope's old list is no way around the checks: references
    // travel in the payload, where schemas can require them.
    if !packet.artifacts.is_empty() {
        return Err(PacketProblem::Envelope {
            message: "the envelope's `artifacts` list is not used; refer to an artifact inside the payload as {\"$artifact\": \"sha256:…\", \"media_type\": …, \"size\": …}".into(),
        });
    }
    Ok(())
}

/// Rejects files that are not wasm, or are core modules, before Cranelift sees them.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_owned(),
        });
    }
    // Bytes 4..8: version 1 and layer 0 for a core module; a component
    // has layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::NotAComponent {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn check_world(engine: &Engine, path: &Path, component: &Component) -> Result<(), LoadError> {
    use crate::wit::{since_v0_1_0, since_v0_2_0};
    let found = export_names(engine, component);
    let guests = [since_v0_2_0::GUEST_EXPORT, since_v0_1_0::GUEST_EXPORT];
    if found.iter().any(|n| guests.contains(&n.as_str())) {
        return Ok(());
    }
    Err(LoadError::WrongWorld {
        path: path.to_owned(),
        expected: guests.map(|g| format!("`{g}`")).join(" or "),
        found,
    })
}

/// Runs blocking load work (file reads, hashing, Cranelift, the disk cache,
/// schema compilation) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, LoadError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(LoadError::Cache(anyhow::Error::from(e).context(
            "the load was cancelled: the async runtime is shutting down",
        ))),
    }
}

/// A call that failed after the host refused one of its outbound requests
/// failed because of the refusal: the agent's own error or trap is
/// replaced by `PolicyDenied`, naming the grant that would allow it. A
/// budget breach stays what it is.
fn blame_http_policy(e: CallError, refused: &[String]) -> CallError {
    let followed = matches!(
        e,
        CallError::Agent { .. } | CallError::GuestTrap { .. } | CallError::InvalidOutput { .. }
    );
    if refused.is_empty() || !followed {
        return e;
    }
    CallError::PolicyDenied {
        agent: e.agent().to_owned(),
        denied: refused
            .iter()
            .map(|url| crate::Denial {
                capability: crate::Capability::Http { url: url.clone() },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn check() -> OutputCheck {
        OutputCheck {
            agent: "a".into(),
            run_id: "r".into(),
            step_id: "s".into(),
            max_depth: 64,
            schema: Arc::new(PayloadSchema::compile(json!({})).unwrap()),
        }
    }

    fn output(filler: usize) -> String {
        let packet = HandoffPacket::new("r", "s", json!({ "filler": "x".repeat(filler) }));
        serde_json::to_string(&packet).unwrap()
    }

    #[tokio::test]
    async fn the_output_check_ends_at_the_deadline() {
        // Large (checked on a blocking thread) and small (inline) outputs.
        for size in [4 << 20, 100] {
            let far = Instant::now() + Duration::from_secs(600);
            let result = check().run_until(output(size), far).await;
            assert!(matches!(result, Some(Ok(_))), "{size}");
            let past = Instant::now();
            let result = check().run_until(output(size), past).await;
            assert!(result.is_none(), "{size}: checked after its deadline");
        }
    }
}
