"""corral agents in Python: declare the schemas once, write a typed `run`, get a WebAssembly component.

An agent is a subclass of `Agent` with `Input` and `Output` dataclasses (or
plain-dict `input_schema` / `output_schema`). `guest(MyAgent())` makes the
class componentize-py exports as the `corral:agent/guest` interface; the SDK
parses the handoff packet, converts the payload to `Input`, wraps the output
in a reply packet, and maps `AgentError` to the contract's error classes.
"""

import dataclasses
import json
import os
import types as pytypes
import typing
from typing import Any, Dict, List, Optional

from componentize_py_types import Err, Ok
from wit_world.imports import host
from wit_world.imports import delegate as wit_delegate
from wit_world.imports import model as wit_model

from . import http

try:
    from wit_world.imports import types as wit
except ImportError:  # the `agent-http` world names it apart from wasi:http's `types`
    from wit_world.imports import corral_agent_types as wit

__all__ = [
    "Agent",
    "AgentError",
    "Artifact",
    "ArtifactError",
    "Context",
    "DelegateError",
    "artifacts",
    "guest",
    "http",
    "schema_of",
]


class AgentError(Exception):
    """A failure the agent reports itself; its class tells the caller what to do about it."""

    CLASSES = {
        "transient": wit.ErrorClass.TRANSIENT,
        "permanent": wit.ErrorClass.PERMANENT,
        "degradable": wit.ErrorClass.DEGRADABLE,
    }

    def __init__(self, message: str, error_class: str = "permanent"):
        if error_class not in self.CLASSES:
            raise ValueError(f"error class must be one of {sorted(self.CLASSES)}, not {error_class!r}")
        super().__init__(message)
        self.message = message
        self.error_class = error_class

    @classmethod
    def transient(cls, message: str) -> "AgentError":
        """Worth retrying: a timeout, a rate limit, a resource briefly unavailable."""
        return cls(message, "transient")

    @classmethod
    def permanent(cls, message: str) -> "AgentError":
        """Retrying will not help: the input is unusable or the task is impossible."""
        return cls(message, "permanent")

    @classmethod
    def degradable(cls, message: str) -> "AgentError":
        """The workflow can go on without this step's output."""
        return cls(message, "degradable")


class Context:
    """The call's identity and the host's logging and progress."""

    LEVELS = {
        "trace": host.Level.TRACE,
        "debug": host.Level.DEBUG,
        "info": host.Level.INFO,
        "warn": host.Level.WARN,
        "error": host.Level.ERROR,
    }

    def __init__(self, run_id: str, step_id: str):
        self.run_id = run_id
        self.step_id = step_id

    def log(self, level: str, message: str, **fields: Any) -> None:
        """A structured log record, e.g. `ctx.log("info", "merged", findings=3)`."""
        host.log(self.LEVELS[level], message, [(k, str(v)) for k, v in fields.items()])

    def progress(self, percent: int, note: str = "") -> None:
        host.progress(max(0, min(100, int(percent))), note)

    def complete(
        self,
        model: str,
        messages: List[Dict[str, Any]],
        max_tokens: int,
        temperature: Optional[float] = None,
        stop: Optional[List[str]] = None,
        tools: Optional[List[Dict[str, Any]]] = None,
        response_schema: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Asks the host for a completion from `model`, an alias the agent lists in `models`.

        `messages` are dicts with `role` (system, user, assistant, tool),
        `content`, and for tool turns `tool_calls` or `tool_call_id`. `tools`
        are dicts with `name`, `description` and `parameters` (a JSON
        Schema). Returns `{"content", "tool_calls", "finish_reason",
        "usage"}`; raises `ModelError` (an `AgentError`, transient for rate
        limits, timeouts and outages) when the host refuses or the provider fails.
        """
        request = wit_model.Request(
            model=model,
            messages=[_message(m) for m in messages],
            max_tokens=int(max_tokens),
            temperature=temperature,
            stop=list(stop or []),
            tools=[
                wit_model.Tool(
                    name=t["name"],
                    description=t.get("description", ""),
                    parameters=json.dumps(t.get("parameters", {"type": "object"})),
                )
                for t in (tools or [])
            ],
            response_schema=None if response_schema is None else json.dumps(response_schema),
        )
        try:
            response = wit_model.complete(request)
        except Err as e:
            raise ModelError.of(e.value) from None
        message = response.message
        usage = response.usage
        return {
            "content": message.content,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
            ],
            "finish_reason": _FINISH.get(response.finish_reason, "other"),
            "usage": None
            if usage is None
            else {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        }

    def delegate(self, agent: str, payload: Any, **budget: Optional[int]) -> Any:
        """Calls `agent` (one of the step's `delegates`) with `payload` and returns its output payload.

        `budget` may set `fuel`, `memory_bytes`, `timeout_ms` and `tokens`,
        each held to what this call has left (unset: the rest); what the
        callee does not use comes back. Raises `DelegateError`.
        """
        try:
            return json.loads(wit_delegate.call(_delegation(agent, payload, budget)))
        except Err as e:
            raise DelegateError.of(e.value) from None

    def delegate_all(self, requests: List[Dict[str, Any]]) -> List[Any]:
        """Calls several agents at once and waits for all; each request is a dict with `agent`, `payload` and optional `budget` (a dict as for `delegate`; unset fuel is an equal share). Returns, in order, each output payload or its `DelegateError`."""
        answers = wit_delegate.call_all(
            [_delegation(r["agent"], r.get("payload"), r.get("budget") or {}) for r in requests]
        )
        return [
            json.loads(a.value) if isinstance(a, Ok) else DelegateError.of(a.value)
            for a in answers
        ]

    def ask(self, model: str, system: str, user: str, max_tokens: int = 256) -> str:
        """One question, one answer: a system prompt and a user message; the answer's text."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return self.complete(model, messages, max_tokens)["content"]


_ROLES = {
    "system": wit_model.Role.SYSTEM,
    "user": wit_model.Role.USER,
    "assistant": wit_model.Role.ASSISTANT,
    "tool": wit_model.Role.TOOL,
}

_FINISH = {
    wit_model.FinishReason.STOP: "stop",
    wit_model.FinishReason.LENGTH: "length",
    wit_model.FinishReason.TOOL_CALLS: "tool_calls",
    wit_model.FinishReason.CONTENT_FILTER: "content_filter",
    wit_model.FinishReason.OTHER: "other",
}


def _message(m: Dict[str, Any]) -> Any:
    role = m.get("role")
    if role not in _ROLES:
        raise ValueError(f"a message's role must be one of {sorted(_ROLES)}, not {role!r}")
    return wit_model.Message(
        role=_ROLES[role],
        content=str(m.get("content", "")),
        tool_calls=[
            wit_model.ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments", "{}"))
            for c in m.get("tool_calls", [])
        ],
        tool_call_id=m.get("tool_call_id"),
    )


def _case(error: Any) -> str:
    """A WIT variant value's case in snake_case: componentize-py names the cases `ModelError_NotGranted` and so on."""
    case = type(error).__name__.split("_", 1)[-1]
    return "".join("_" + c.lower() if c.isupper() else c for c in case).lstrip("_")


class ModelError(AgentError):
    """A completion the host refused or the provider failed; `kind` names the case."""

    TRANSIENT = {"rate_limited", "timeout", "unavailable"}

    def __init__(self, kind: str, message: str):
        super().__init__(message, "transient" if kind in self.TRANSIENT else "permanent")
        self.kind = kind

    @classmethod
    def of(cls, error: Any) -> "ModelError":
        kind = _case(error)
        return cls(kind, f"model call failed ({kind}): {error.value}")


def _delegation(agent: str, payload: Any, budget: Dict[str, Optional[int]]) -> Any:
    unknown = set(budget) - {"fuel", "memory_bytes", "timeout_ms", "tokens"}
    if unknown:
        raise ValueError(f"a sub-budget has fuel, memory_bytes, timeout_ms and tokens, not {sorted(unknown)}")
    return wit_delegate.Request(
        agent=agent,
        payload=json.dumps(_plain(payload)),
        budget=wit_delegate.SubBudget(**{k: budget.get(k) for k in ("fuel", "memory_bytes", "timeout_ms", "tokens")}),
    )


class DelegateError(AgentError):
    """A delegated call that gave no output. `kind` is `not_granted`, `invalid_input`, `limit_reached`, `breached` (the callee hit its sub-budget or trapped) or `failed` (the callee's own error, whose class it keeps)."""

    def __init__(self, kind: str, message: str, error_class: str = "permanent"):
        super().__init__(message, error_class)
        self.kind = kind

    @classmethod
    def of(cls, error: Any) -> "DelegateError":
        kind = _case(error)
        if kind == "failed":
            classes = {v: k for k, v in AgentError.CLASSES.items()}
            return cls(kind, error.value.message, classes.get(error.value.class_, "permanent"))
        return cls(kind, f"delegated call failed ({kind}): {error.value}")


class Agent:
    """Subclass this. Set `name`, `version`, `description`, and `Input`/`Output` (dataclasses) or the schemas."""

    name: str = "agent"
    version: str = "0.1.0"
    description: str = ""
    Input: Optional[type] = None
    Output: Optional[type] = None
    input_schema: Optional[Dict[str, Any]] = None
    output_schema: Optional[Dict[str, Any]] = None
    # What the agent asks the host for; nothing is granted unless listed here
    # and granted by the operator.
    models: List[str] = []
    """Model aliases for `ctx.complete` (contract 0.2.0)."""
    env: List[str] = []
    """Environment variables the agent reads."""
    http: List[str] = []
    """Where `corral_sdk.http` may send requests: `[METHODS ]scheme://host[:port][/path-prefix]`, or `*` for wherever the operator's grants allow (contract 0.2.0; build against the `agent-http` world)."""

    def run(self, ctx: Context, input: Any) -> Any:
        raise NotImplementedError("an agent implements run(self, ctx, input)")


_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(tp: Any) -> Dict[str, Any]:
    """A JSON Schema for a type hint: dataclasses, lists, dicts, Optional, Literal and primitives."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    if tp is Artifact:
        return dict(Artifact.SCHEMA)
    if tp is Any or tp is None:
        return {}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, List):
        return {"type": "array", "items": schema_of(args[0]) if args else {}}
    if origin in (dict, Dict):
        return {"type": "object", "additionalProperties": schema_of(args[1]) if len(args) == 2 else {}}
    if origin in (typing.Union, pytypes.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = schema_of(rest[0]) if len(rest) == 1 else {"anyOf": [schema_of(a) for a in rest]}
        if len(rest) == len(args):
            return inner
        # Optional: `None` is sent as null, so null must be valid (as
        # schemars writes a Rust `Option`).
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props, required = {}, []
        for f in dataclasses.fields(tp):
            props[f.name] = schema_of(hints[f.name])
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if not has_default:
                required.append(f.name)
        schema = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            schema["required"] = required
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            schema["description"] = tp.__doc__.strip()
        return schema
    raise TypeError(f"corral_sdk cannot describe the type {tp!r}; declare input_schema/output_schema as dicts")


def _build(tp: Any, value: Any) -> Any:
    """Converts JSON (already checked against the schema by the host) into `tp`."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Artifact:
        return Artifact.from_json(value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _build(hints[k], v) for k, v in value.items() if k in hints})
    if origin in (list, List) and args:
        return [_build(args[0], v) for v in value]
    if origin in (typing.Union, pytypes.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _build(rest[0], value) if len(rest) == 1 else value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Artifact):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Not `asdict`: it would copy an `Artifact` field rather than convert it.
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _schemas(agent: Agent):
    input_schema = agent.input_schema if agent.input_schema is not None else schema_of(agent.Input)
    output_schema = agent.output_schema if agent.output_schema is not None else schema_of(agent.Output)
    return input_schema, output_schema


def guest(agent: Agent) -> type:
    """The class componentize-py exports as `Guest`: `Guest = guest(MyAgent())` in the app module."""
    input_schema, output_schema = _schemas(agent)

    def handle(packet: str) -> str:
        envelope = json.loads(packet)
        ctx = Context(envelope.get("run_id", ""), envelope.get("step_id", ""))
        payload = envelope.get("payload")
        if agent.Input is not None and agent.input_schema is None:
            payload = _build(agent.Input, payload)
        try:
            output = agent.run(ctx, payload)
        except AgentError as e:
            raise Err(wit.AgentError(AgentError.CLASSES[e.error_class], e.message))
        except MemoryError:
            raise  # see `run`: never an agent error
        except http.HttpError as e:  # as Rust's `?` on one: transient only for transport failures
            error_class = "transient" if isinstance(e, http.Transport) else "permanent"
            raise Err(wit.AgentError(AgentError.CLASSES[error_class], str(e)))
        except Exception as e:  # an author's bug is a permanent failure, with its message
            raise Err(wit.AgentError(wit.ErrorClass.PERMANENT, f"{type(e).__name__}: {e}"))
        reply = {k: envelope[k] for k in ("version", "run_id", "step_id") if k in envelope}
        reply["payload"] = _plain(output)
        return json.dumps(reply)

    class Guest:
        def describe(self) -> wit.AgentInfo:
            return wit.AgentInfo(
                name=agent.name,
                version=agent.version,
                description=agent.description,
                input_schema=json.dumps(input_schema),
                output_schema=json.dumps(output_schema),
                capabilities=[wit.Capability_Env(v) for v in agent.env]
                + [wit.Capability_Model(m) for m in agent.models]
                + [wit.Capability_Http(h) for h in agent.http],
            )

        def run(self, packet: str) -> str:
            try:
                return handle(packet)
            except MemoryError:
                # Abort without a panic: the host saw the refused growth and
                # reports a typed memory-limit breach. Re-raising would make
                # componentize-py panic, and the host takes a panic after a
                # refused growth for a failure of its own.
                os.abort()

    return Guest


# Last: the module builds on `AgentError` and `_case` above.
from . import artifacts  # noqa: E402
from .artifacts import Artifact, ArtifactError  # noqa: E402
