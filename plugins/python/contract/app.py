"""Fixture: a Python agent that succeeds, fails, breaks its schema, loops or hoards memory on command, for the contract tests."""

from corral_sdk import Agent, AgentError, Context, guest


class Contract(Agent):
    name = "contract-py"
    version = "0.1.0"
    description = "Misbehaves on command for the cross-language contract tests."
    input_schema = {
        "type": "object",
        "properties": {
            "action": {"enum": ["ok", "error", "violate", "loop", "alloc", "log"]},
            "class": {"enum": ["transient", "permanent", "degradable"]},
        },
        "required": ["action"],
        "additionalProperties": False,
    }
    output_schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }

    def run(self, ctx: Context, input: dict) -> dict:
        action = input["action"]
        if action == "error":
            raise AgentError("asked to fail", input.get("class", "permanent"))
        if action == "violate":
            return {"ok": "not a boolean"}
        if action == "loop":
            x = 1
            while True:
                x = (x * 6364136223846793005 + 1) % (1 << 64)
        if action == "alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if action == "log":
            ctx.log("info", "hello", k="v")
            ctx.progress(50, "half way")
        return {"ok": True}


Guest = guest(Contract())
