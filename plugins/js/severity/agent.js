// Agent: rates log or ticket lines by severity and groups near-duplicates under one key.

import { defineAgent, AgentError } from "corral-sdk";

// Checked in order: the first level whose keywords the line mentions wins.
const RULES = [
  ["critical", /crash|data loss|corrupt|outage/],
  ["high", /error|fail|exception/],
  ["medium", /slow|timeout|retry/],
];

/** Lowercased words without digits, first three joined by `-`: "Disk 3 failed twice" -> "disk-failed-twice". */
function keyOf(line) {
  const words = line
    .toLowerCase()
    .replace(/[0-9]/g, "")
    // Letters (ASCII and beyond, less the punctuation block) make words; `\p{L}` would be neater, but
    // componentize-js's engine has no Unicode property tables.
    .split(/[^a-z_\u00c0-\u1fff\u2070-\uffff]+/)
    .filter(Boolean);
  return words.slice(0, 3).join("-");
}

function severityOf(line) {
  const lower = line.toLowerCase();
  for (const [severity, pattern] of RULES) {
    if (pattern.test(lower)) return severity;
  }
  return "low";
}

export const guest = defineAgent({
  name: "severity",
  version: "0.1.0",
  description: "Rates each log or ticket line critical, high, medium or low by its keywords; near-duplicate lines share a key.",
  inputSchema: {
    type: "object",
    properties: {
      lines: { type: "array", items: { type: "string" }, description: "Log or ticket lines, one finding each." },
    },
    required: ["lines"],
    additionalProperties: false,
  },
  outputSchema: {
    type: "object",
    properties: {
      findings: {
        type: "array",
        description: "One finding per non-empty line, in input order.",
        items: {
          type: "object",
          properties: {
            key: { type: "string", description: "The line's first three words, lowercased, digits removed." },
            severity: { enum: ["critical", "high", "medium", "low"] },
            message: { type: "string", description: "The line, trimmed." },
          },
          required: ["key", "severity", "message"],
          additionalProperties: false,
        },
      },
    },
    required: ["findings"],
    additionalProperties: false,
  },

  run(ctx, { lines }) {
    if (lines.length === 0) {
      throw AgentError.permanent("nothing to rate: `lines` is empty");
    }
    const findings = lines
      .map((line) => line.trim())
      .filter((line) => line !== "")
      .map((line) => ({ key: keyOf(line), severity: severityOf(line), message: line }));
    ctx.log("info", "rated lines", [["lines", String(lines.length)], ["findings", String(findings.length)]]);
    return { findings };
  },
});
