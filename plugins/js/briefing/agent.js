// Agent: fetches a URL it is given (wherever the operator's grants allow) and asks a model to brief the reader on it.

import { defineAgent, AgentError } from "corral-sdk";

// The model alias the operator maps to a provider.
const ALIAS = "fast";
// The most page text sent to the model.
const MAX_TEXT = 4000;

export const guest = defineAgent({
  name: "briefing",
  version: "0.1.0",
  description: "Fetches a granted URL and asks a model for a two-sentence briefing on it.",
  models: [ALIAS],
  http: ["*"],
  inputSchema: {
    type: "object",
    properties: { url: { type: "string", pattern: "^https?://" } },
    required: ["url"],
    additionalProperties: false,
  },
  outputSchema: {
    type: "object",
    properties: {
      url: { type: "string" },
      status: { type: "integer" },
      bytes: { type: "integer" },
      briefing: { type: "string" },
    },
    required: ["url", "status", "bytes", "briefing"],
    additionalProperties: false,
  },
  async run(ctx, { url }) {
    let response;
    try {
      response = await fetch(url);
    } catch (e) {
      // A denial by the host's grants arrives as a failed fetch; the host's
      // receipt says which grant would allow it.
      throw AgentError.permanent(`cannot fetch ${url}: ${e?.message ?? e}`);
    }
    const text = await response.text();
    if (!response.ok) throw AgentError.permanent(`${url} answered ${response.status}`);
    const briefing = ctx.ask(
      ALIAS,
      "Brief the reader on this page in two sentences.",
      text.slice(0, MAX_TEXT),
      200,
    );
    return { url, status: response.status, bytes: text.length, briefing };
  },
});
