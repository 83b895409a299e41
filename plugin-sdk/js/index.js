// corral-sdk: write corral agents in JavaScript; `defineAgent` builds the WIT `guest` export.
//
// The module is bundled into the agent's single source and componentized with
// componentize-js against `wit/since_v0.2.0` (world `agent`); the imports below
// are resolved by componentize-js, not by the bundler.

import { log as hostLog, progress as hostProgress } from "corral:agent/host@0.2.0";
import { complete as hostComplete } from "corral:agent/model@0.2.0";
import { call as hostDelegate, callAll as hostDelegateAll } from "corral:agent/delegate@0.2.0";
import { Writer as HostWriter, read as hostRead } from "corral:agent/artifacts@0.2.0";

/** @typedef {"transient" | "permanent" | "degradable"} ErrorClass */
/** @typedef {"trace" | "debug" | "info" | "warn" | "error"} Level */
/**
 * A reference to a stored artifact, as it travels in a packet.
 * @typedef {{ "$artifact": string, media_type: string, size: number }} Artifact
 */
/**
 * The callee's limits for a delegated call; each unset one is all the caller has left.
 * @typedef {{ fuel?: number, memoryBytes?: number, timeoutMs?: number, tokens?: number }} SubBudget
 */

const CLASSES = ["transient", "permanent", "degradable"];
const LEVELS = ["trace", "debug", "info", "warn", "error"];
// Made up front: when it is needed there may be no memory left to make it.
// Its class is deliberately no WIT `error-class`, so lowering it traps.
const OUT_OF_MEMORY = { tag: "err", val: { class: "(the JS engine ran out of memory)", message: "" } };

/**
 * An error the agent reports itself. Its class decides what a workflow does:
 * transient errors are retried, permanent ones fail the step (or go to a
 * fallback), degradable ones let the workflow continue without this result.
 */
export class AgentError extends Error {
  /**
   * @param {ErrorClass} errorClass
   * @param {string} message
   */
  constructor(errorClass, message) {
    super(message);
    if (!CLASSES.includes(errorClass)) {
      throw new TypeError(`AgentError class must be one of ${CLASSES.join(", ")}, not ${JSON.stringify(errorClass)}`);
    }
    this.name = "AgentError";
    /** @type {ErrorClass} */
    this.class = errorClass;
  }

  /** Worth retrying: a timeout, a rate limit, a resource briefly unavailable. @param {string} message */
  static transient(message) {
    return new AgentError("transient", message);
  }

  /** Retrying will not help: invalid input, a missing resource, a bug. @param {string} message */
  static permanent(message) {
    return new AgentError("permanent", message);
  }

  /** The result is optional: the workflow may go on without it. @param {string} message */
  static degradable(message) {
    return new AgentError("degradable", message);
  }
}

/**
 * What an agent knows about the call it is serving, and its channel back to the host.
 * @typedef {object} Context
 * @property {string} runId The workflow run this call belongs to.
 * @property {string} stepId The step of the run this call serves.
 * @property {(level: Level, message: string, fields?: [string, string][] | Record<string, unknown>) => void} log
 *   Log with structured fields. The host caps log bytes per call and drops the rest.
 * @property {(percent: number, note?: string) => void} progress Report progress, 0 to 100.
 * @property {(agent: string, payload: any, budget?: SubBudget) => any} delegate
 *   Call an agent of the step's `delegates` and get its output payload (throws a {@link DelegateError}).
 * @property {(requests: { agent: string, payload: any, budget?: SubBudget }[]) => any[]} delegateAll
 *   Call several at once; each answer is an output payload or a {@link DelegateError}.
 */

/**
 * @typedef {object} AgentSpec
 * @property {string} name
 * @property {string} version
 * @property {string} description
 * @property {object} inputSchema JSON Schema of the payload `run` accepts; the host checks it before the call.
 * @property {object} outputSchema JSON Schema of the payload `run` returns; the host checks it after.
 * @property {(ctx: Context, payload: any) => any} run Returns the output payload (or a promise of it),
 *   or throws an {@link AgentError}; any other exception becomes a permanent error.
 */

/**
 * Turns an agent definition into the object to export as the `guest` interface:
 * `export const guest = defineAgent({ ... })`.
 * @param {AgentSpec} spec
 */
export function defineAgent(spec) {
  // Mistakes here throw while componentize-js initializes the module, so they fail the build.
  for (const key of ["name", "version", "description"]) {
    if (typeof spec[key] !== "string") throw new TypeError(`defineAgent: \`${key}\` must be a string`);
  }
  for (const key of ["inputSchema", "outputSchema"]) {
    if (spec[key] === null || typeof spec[key] !== "object") {
      throw new TypeError(`defineAgent: \`${key}\` must be a JSON Schema object`);
    }
  }
  if (typeof spec.run !== "function") throw new TypeError("defineAgent: `run` must be a function");

  const info = {
    name: spec.name,
    version: spec.version,
    description: spec.description,
    inputSchema: JSON.stringify(spec.inputSchema),
    outputSchema: JSON.stringify(spec.outputSchema),
    capabilities: capabilities(spec),
  };

  return {
    describe() {
      return info;
    },

    // componentize-js takes a returned `{ tag, val }` as the WIT result
    // itself. Returning it rather than throwing keeps every exception inside:
    // an `Error` escaping `run` traps the component (its bindings then fail
    // to read an `agent-error` out of it).
    async run(packetText) {
      try {
        const packet = JSON.parse(packetText);
        const payload = await spec.run(makeContext(packet), packet.payload);
        if (payload === undefined) {
          throw AgentError.permanent("the agent's run returned no payload");
        }
        const reply = {
          version: packet.version,
          run_id: packet.run_id,
          step_id: packet.step_id,
          payload,
        };
        return { tag: "ok", val: JSON.stringify(reply) };
      } catch (e) {
        // SpiderMonkey reports a failed allocation (the host refused to grow
        // memory) as the catchable string "out of memory". Trap instead of
        // returning an agent error: the host then reports the breach of its
        // memory budget, as it does for a Rust agent that aborts.
        if (e === "out of memory") return OUT_OF_MEMORY;
        return { tag: "err", val: toWitError(e) };
      }
    },
  };
}

/**
 * What the agent asks the host for: `env` (variable names), `models` (model
 * aliases for `ctx.complete`) and `http` (where `fetch` may go, such as
 * `https://api.example.com/v1`, or `*` for wherever the operator's grants
 * allow). Nothing is granted unless listed here and granted by the operator.
 */
function capabilities(spec) {
  const list = (key) => {
    const v = spec[key] ?? [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
      throw new TypeError(`defineAgent: \`${key}\` must be a list of strings`);
    }
    return v;
  };
  return [
    ...list("env").map((val) => ({ tag: "env", val })),
    ...list("models").map((val) => ({ tag: "model", val })),
    ...list("http").map((val) => ({ tag: "http", val })),
  ];
}

const ROLES = ["system", "user", "assistant", "tool"];
const TRANSIENT_MODEL_ERRORS = ["rate-limited", "timeout", "unavailable"];

/**
 * A completion the host refused or the provider failed. `kind` names the
 * case (`not-granted`, `token-budget-exhausted`, `rate-limited`, ...); rate
 * limits, timeouts and outages are transient, the rest permanent.
 */
export class ModelError extends AgentError {
  constructor(kind, message) {
    super(TRANSIENT_MODEL_ERRORS.includes(kind) ? "transient" : "permanent", `model call failed (${kind}): ${message}`);
    this.name = "ModelError";
    this.kind = kind;
  }
}

/**
 * Asks the host for a completion (contract 0.2.0). `request.model` is an alias
 * listed in `models`; messages are `{ role, content, toolCalls?, toolCallId? }`;
 * tools are `{ name, description, parameters }` with `parameters` a JSON Schema.
 * Returns `{ content, toolCalls, finishReason, usage }`.
 */
function complete(request) {
  const messages = (request.messages ?? []).map((m) => {
    if (!ROLES.includes(m.role)) throw new TypeError(`a message's role must be one of ${ROLES.join(", ")}`);
    return {
      role: m.role,
      content: String(m.content ?? ""),
      toolCalls: (m.toolCalls ?? []).map((c) => ({ id: c.id, name: c.name, arguments: c.arguments ?? "{}" })),
      toolCallId: m.toolCallId,
    };
  });
  let response;
  try {
    response = hostComplete({
      model: String(request.model),
      messages,
      maxTokens: Number(request.maxTokens ?? 256),
      temperature: request.temperature,
      stop: request.stop ?? [],
      tools: (request.tools ?? []).map((t) => ({
        name: t.name,
        description: t.description ?? "",
        parameters: JSON.stringify(t.parameters ?? { type: "object" }),
      })),
      responseSchema: request.responseSchema === undefined ? undefined : JSON.stringify(request.responseSchema),
    });
  } catch (e) {
    // componentize-js throws the `model-error` variant as the error's payload.
    const p = e?.payload;
    if (p && typeof p.tag === "string") throw new ModelError(p.tag, String(p.val));
    throw e;
  }
  return {
    content: response.message.content,
    toolCalls: response.message.toolCalls,
    finishReason: response.finishReason,
    usage: response.usage,
  };
}

/** @returns {Context} */
function makeContext(packet) {
  return {
    runId: packet.run_id,
    stepId: packet.step_id,
    log(level, message, fields = []) {
      if (!LEVELS.includes(level)) {
        throw new TypeError(`log level must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(level)}`);
      }
      const pairs = Array.isArray(fields) ? fields : Object.entries(fields);
      hostLog(level, String(message), pairs.map(([k, v]) => [String(k), String(v)]));
    },
    complete,
    delegate,
    delegateAll,
    /** One question, one answer: the answer's text. */
    ask(model, system, user, maxTokens = 256) {
      const messages = [
        { role: "system", content: system },
        { role: "user", content: user },
      ];
      return complete({ model, messages, maxTokens }).content;
    },
    progress(percent, note = "") {
      // The WIT type is a u8: clamp and round here rather than trap on 150 or 12.5.
      const pct = Math.round(Math.min(100, Math.max(0, Number(percent) || 0)));
      hostProgress(pct, String(note));
    },
  };
}

/** Maps anything thrown by the agent onto the WIT `agent-error` record. */
function toWitError(e) {
  if (e instanceof AgentError) return { class: e.class, message: e.message };
  // An unexpected exception is a bug in the agent: retrying will not help.
  const message = e instanceof Error ? `${e.name}: ${e.message}` : `uncaught exception: ${safeString(e)}`;
  if (e instanceof Error && e.stack) {
    hostLog("error", "uncaught exception in run", [["stack", String(e.stack)]]);
  }
  return { class: "permanent", message };
}

/** `String(value)`, which cannot itself throw (as it can for `Object.create(null)`). */
function safeString(value) {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * A delegated call that gave no output. `kind` is `not-granted`,
 * `invalid-input`, `limit-reached`, `breached` (the callee hit its sub-budget
 * or trapped) or `failed` (the callee's own error, whose class it keeps).
 */
export class DelegateError extends AgentError {
  constructor(kind, message, errorClass = "permanent") {
    super(CLASSES.includes(errorClass) ? errorClass : "permanent", message);
    this.name = "DelegateError";
    this.kind = kind;
  }

  /** From the WIT `delegate-error` variant (`{ tag, val }`). */
  static of(variant) {
    if (variant.tag === "failed") return new DelegateError("failed", variant.val.message, variant.val.class);
    return new DelegateError(variant.tag, `delegated call failed (${variant.tag}): ${variant.val}`);
  }
}

const BUDGET_KEYS = ["fuel", "memoryBytes", "timeoutMs", "tokens"];

/** A WIT `request`: the payload as JSON text, each limit a u64 (a BigInt) or unset. */
function delegation(agent, payload, budget = {}) {
  const unknown = Object.keys(budget ?? {}).filter((k) => !BUDGET_KEYS.includes(k));
  if (unknown.length) {
    throw new TypeError(`a sub-budget has ${BUDGET_KEYS.join(", ")}, not ${unknown.join(", ")}`);
  }
  const limit = (k) => {
    const v = budget?.[k];
    if (v === undefined || v === null) return undefined;
    if (!(Number.isSafeInteger(v) && v >= 0) && typeof v !== "bigint") {
      throw new TypeError(`sub-budget \`${k}\` must be a whole number, not ${safeString(v)}`);
    }
    return BigInt(v);
  };
  return {
    agent: String(agent),
    payload: JSON.stringify(payload),
    budget: { fuel: limit("fuel"), memoryBytes: limit("memoryBytes"), timeoutMs: limit("timeoutMs"), tokens: limit("tokens") },
  };
}

/**
 * Calls `agent` (one of the step's `delegates`) with `payload` and returns its
 * output payload; what the callee does not use of `budget` comes back.
 * Throws a {@link DelegateError}.
 * @param {string} agent
 * @param {any} payload
 * @param {SubBudget} [budget]
 */
function delegate(agent, payload, budget = {}) {
  try {
    return JSON.parse(hostDelegate(delegation(agent, payload, budget)));
  } catch (e) {
    // componentize-js throws the `delegate-error` variant as the error's payload.
    const p = e?.payload;
    if (p && typeof p.tag === "string") throw DelegateError.of(p);
    throw e;
  }
}

/**
 * Calls several agents at once and waits for all. Each request is
 * `{ agent, payload, budget? }` (unset fuel is an equal share); returns, in
 * order, each output payload or its {@link DelegateError}.
 * @param {{ agent: string, payload: any, budget?: SubBudget }[]} requests
 */
function delegateAll(requests) {
  const answers = hostDelegateAll(requests.map((r) => delegation(r.agent, r.payload, r.budget)));
  return answers.map((a) => (a.tag === "ok" ? JSON.parse(a.val) : DelegateError.of(a.val)));
}

/** The largest chunk the host takes or gives at once. */
const CHUNK = 1 << 20;

/**
 * The host refused an artifact write or read. `kind` is `not-found`,
 * `quota`, `invalid` or `unavailable` (the store failed: transient).
 */
export class ArtifactError extends AgentError {
  constructor(kind, message) {
    super(kind === "unavailable" ? "transient" : "permanent", `artifact ${kind}: ${message}`);
    this.name = "ArtifactError";
    this.kind = kind;
  }
}

function artifactCall(f) {
  try {
    return f();
  } catch (e) {
    const p = e?.payload;
    if (p && typeof p.tag === "string") throw new ArtifactError(p.tag, String(p.val));
    throw e;
  }
}

const encoder = new TextEncoder();

/** An artifact being written: `write` as often as needed, then `finish` once. */
class ArtifactWriter {
  /** @param {string} mediaType */
  constructor(mediaType) {
    this.inner = artifactCall(() => new HostWriter(String(mediaType)));
  }

  /** Appends bytes (a string is written as UTF-8), a chunk at a time. @param {Uint8Array | string} data */
  write(data) {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    for (let at = 0; at < bytes.length; at += CHUNK) {
      const chunk = bytes.subarray(at, Math.min(at + CHUNK, bytes.length));
      artifactCall(() => this.inner.write(chunk));
    }
  }

  /** Stores what was written and gives its reference; the writer is spent. @returns {Artifact} */
  finish() {
    const a = artifactCall(() => this.inner.finish());
    return { $artifact: a.digest, media_type: a.mediaType, size: Number(a.size) };
  }
}

/** The artifact's bytes, a chunk of at most 1 MiB at a time. @param {Artifact} artifact */
function* chunks(artifact) {
  const digest = String(artifact.$artifact);
  let offset = 0n;
  for (;;) {
    const chunk = artifactCall(() => hostRead(digest, offset, CHUNK));
    if (chunk.length === 0) return;
    offset += BigInt(chunk.length);
    yield chunk;
  }
}

/** The artifact's text, a piece (of at most 1 MiB of bytes) at a time. @param {Artifact} artifact */
function* textChunks(artifact) {
  const decoder = new TextDecoder();
  for (const chunk of chunks(artifact)) {
    const piece = decoder.decode(chunk, { stream: true });
    if (piece) yield piece;
  }
  const rest = decoder.decode();
  if (rest) yield rest;
}

/**
 * Large data by content-addressed reference (contract 0.2.0). A call may
 * read the artifacts its input names and those it wrote; a call holds at
 * most 16 writers at once.
 */
export const artifacts = {
  /** The JSON Schema of a reference, for a field of `inputSchema` or `outputSchema`. */
  schema: {
    title: "corral artifact reference",
    type: "object",
    properties: {
      $artifact: { type: "string", pattern: "^sha256:[0-9a-f]{64}$" },
      media_type: { type: "string" },
      size: { type: "integer", minimum: 0 },
    },
    required: ["$artifact", "media_type", "size"],
    additionalProperties: false,
  },
  /** A writer for a new artifact of `mediaType`. */
  writer: (mediaType) => new ArtifactWriter(mediaType),
  /** Stores `data` (bytes, or a string as UTF-8) as one artifact. @returns {Artifact} */
  put(data, mediaType) {
    const w = new ArtifactWriter(mediaType);
    w.write(data);
    return w.finish();
  },
  chunks,
  textChunks,
  /** The whole artifact's bytes; for a large one, read it with `chunks`. @returns {Uint8Array} */
  get(artifact) {
    const parts = Array.from(chunks(artifact));
    const out = new Uint8Array(parts.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of parts) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  },
  /** The whole artifact as text (UTF-8). */
  text(artifact) {
    return Array.from(textChunks(artifact)).join("");
  },
};
