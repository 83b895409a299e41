// Fixture: a JS agent that succeeds, fails or misbehaves on command, to test the SDK and the host's limits.

import { defineAgent, AgentError } from "corral-sdk";

export const guest = defineAgent({
  name: "contract",
  version: "0.1.0",
  description: "Test fixture: does what the payload's `action` says, including breaking its own output schema and budgets.",
  inputSchema: {
    type: "object",
    properties: {
      action: { enum: ["ok", "error", "throw", "violate", "loop", "alloc", "log"] },
      class: { enum: ["transient", "permanent", "degradable"] },
    },
    required: ["action"],
    additionalProperties: false,
  },
  outputSchema: {
    type: "object",
    properties: { ok: { type: "boolean" } },
    required: ["ok"],
    additionalProperties: false,
  },

  run(ctx, input) {
    switch (input.action) {
      case "ok":
        return { ok: true };
      case "error":
        throw new AgentError(input.class ?? "permanent", "asked to fail");
      case "throw":
        // Not an AgentError: the SDK must turn it into a permanent one.
        return { ok: input.missing.field };
      case "violate":
        return { ok: "not a boolean" };
      case "loop": {
        // The state escapes into a global each turn, so the loop has an effect
        // and no optimizer may drop it; only the fuel budget ends it.
        let x = 1;
        for (;;) {
          x = (Math.imul(x, 1103515245) + 12345) | 0;
          globalThis.__corralSpin = x;
        }
      }
      case "alloc": {
        // Distinct 1 MiB arrays kept alive in a list: only the memory limit ends it.
        const hoard = [];
        for (let i = 0; ; i++) {
          hoard.push(new Uint8Array(1 << 20).fill(i & 0xff));
        }
      }
      case "log":
        ctx.log("info", "hello", [["k", "v"]]);
        ctx.progress(50);
        return { ok: true };
      default:
        throw AgentError.permanent(`unknown action ${JSON.stringify(input.action)}`);
    }
  },
});
