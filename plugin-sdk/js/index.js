// corral-sdk: write corral agents in JavaScript; `defineAgent` builds the WIT `guest` export.
//
// The module is bundled into the agent's single source and componentized with
// componentize-js against `wit/since_v0.1.0` (world `agent`); the import below
// is resolved by componentize-js, not by the bundler.

import { log as hostLog, progress as hostProgress } from "corral:agent/host@0.1.0";

/** @typedef {"transient" | "permanent" | "degradable"} ErrorClass */
/** @typedef {"trace" | "debug" | "info" | "warn" | "error"} Level */
/** @typedef {{ name: string, digest: string, media_type: string, size: number }} ArtifactRef */

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
 * @property {ArtifactRef[]} artifacts Artifacts the input packet refers to.
 * @property {(level: Level, message: string, fields?: [string, string][] | Record<string, unknown>) => void} log
 *   Log with structured fields. The host caps log bytes per call and drops the rest.
 * @property {(percent: number, note?: string) => void} progress Report progress, 0 to 100.
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
    capabilities: [],
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

/** @returns {Context} */
function makeContext(packet) {
  return {
    runId: packet.run_id,
    stepId: packet.step_id,
    artifacts: packet.artifacts ?? [],
    log(level, message, fields = []) {
      if (!LEVELS.includes(level)) {
        throw new TypeError(`log level must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(level)}`);
      }
      const pairs = Array.isArray(fields) ? fields : Object.entries(fields);
      hostLog(level, String(message), pairs.map(([k, v]) => [String(k), String(v)]));
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
