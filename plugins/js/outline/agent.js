// Agent: outlines a text document stored as an artifact: reads it a chunk at a time, delegates its
// paragraphs to `summarize` in batches, and writes the outline (one line per paragraph) as a new artifact.

import { defineAgent, AgentError, DelegateError, artifacts } from "corral-sdk";

// Paragraphs summarized at once: bounds what the agent holds besides the outline.
const BATCH = 8;

/** The document's paragraphs (split at blank lines), read as they are needed. */
function* paragraphs(document) {
  let pending = "";
  for (const piece of artifacts.textChunks(document)) {
    pending += piece;
    const parts = pending.split(/\n[ \t]*\n/);
    pending = parts.pop();
    for (const p of parts) if (p.trim()) yield p.trim();
  }
  if (pending.trim()) yield pending.trim();
}

export const guest = defineAgent({
  name: "outline",
  version: "0.1.0",
  description: "Outlines a text document (an artifact): one summary line per paragraph, written as a markdown artifact.",
  inputSchema: {
    type: "object",
    properties: {
      document: { ...artifacts.schema, description: "The document, paragraphs separated by blank lines." },
      fuel_each: { type: "integer", minimum: 1, description: "Fuel carved for each paragraph's summary; unset, an equal share." },
    },
    required: ["document"],
    additionalProperties: false,
  },
  outputSchema: {
    type: "object",
    properties: {
      outline: { ...artifacts.schema, description: "The outline, as text/markdown." },
      paragraphs: { type: "integer", description: "Paragraphs summarized." },
      failed: { type: "array", items: { type: "string" }, description: "The kind of each failed delegation." },
    },
    required: ["outline", "paragraphs", "failed"],
    additionalProperties: false,
  },
  run(ctx, input) {
    const out = artifacts.writer("text/markdown");
    let done = 0;
    const failed = [];
    let batch = [];
    const flush = () => {
      const answers = ctx.delegateAll(
        batch.map((text) => ({ agent: "summarize", payload: { text, max_sentences: 1 }, budget: { fuel: input.fuel_each } })),
      );
      for (const a of answers) {
        if (a instanceof DelegateError) {
          failed.push(a.kind);
        } else {
          out.write(`- ${a.summary}\n`);
          done += 1;
        }
      }
      batch = [];
    };
    for (const p of paragraphs(input.document)) {
      batch.push(p);
      if (batch.length === BATCH) flush();
    }
    if (batch.length) flush();
    if (done + failed.length === 0) throw AgentError.permanent("the document has no paragraphs");
    return { outline: out.finish(), paragraphs: done, failed };
  },
});
