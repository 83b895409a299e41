"""Agent: answers a question with a model that may call tools (a glossary lookup and a word count), looping model -> tools -> model until the model answers, at most `max_rounds` times."""

import json

from corral_sdk import Agent, AgentError, Context, guest

# The model alias the operator maps to a provider.
ALIAS = "fast"

GLOSSARY = {
    "wasm": "WebAssembly: a portable, sandboxed binary format for code.",
    "component": "A WebAssembly component: a module with typed imports and exports (WIT).",
    "fuel": "A count of executed instructions; corral stops a call when its fuel runs out.",
}

TOOLS = [
    {
        "name": "lookup",
        "description": "Look a term up in the glossary.",
        "parameters": {
            "type": "object",
            "properties": {"term": {"type": "string"}},
            "required": ["term"],
        },
    },
    {
        "name": "word_count",
        "description": "Count the words of a text.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
]


def call_tool(name: str, arguments: str) -> str:
    """Runs one tool call; a bad call is answered, not raised, so the model can correct itself."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError as e:
        return f"error: the arguments are not JSON ({e})"
    if name == "lookup":
        term = str(args.get("term", "")).lower()
        return GLOSSARY.get(term, f"no entry for {term!r}")
    if name == "word_count":
        return str(len(str(args.get("text", "")).split()))
    return f"error: there is no tool {name!r}"


class Researcher(Agent):
    name = "researcher"
    version = "0.1.0"
    description = "Answers a question with a tool-using model (glossary lookup, word count), bounded by its rounds and the host's token budget."
    models = [ALIAS]
    input_schema = {
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1},
            "max_rounds": {"type": "integer", "minimum": 1, "maximum": 8},
        },
        "required": ["question"],
        "additionalProperties": False,
    }
    output_schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "rounds": {"type": "integer"},
            "tool_calls": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["answer", "rounds", "tool_calls"],
        "additionalProperties": False,
    }

    def run(self, ctx: Context, input: dict) -> dict:
        messages = [
            {"role": "system", "content": "Answer briefly. Use the tools when they help."},
            {"role": "user", "content": input["question"]},
        ]
        used = []
        rounds = input.get("max_rounds", 4)
        for round in range(1, rounds + 1):
            reply = ctx.complete(ALIAS, messages, max_tokens=256, tools=TOOLS)
            if not reply["tool_calls"]:
                return {"answer": reply["content"], "rounds": round, "tool_calls": used}
            messages.append(
                {"role": "assistant", "content": reply["content"], "tool_calls": reply["tool_calls"]}
            )
            for call in reply["tool_calls"]:
                used.append(call["name"])
                result = call_tool(call["name"], call["arguments"])
                ctx.log("info", "tool call", tool=call["name"], result=result[:80])
                messages.append({"role": "tool", "content": result, "tool_call_id": call["id"]})
        raise AgentError.permanent(f"no answer after {rounds} rounds of tool calls")


Guest = guest(Researcher())
