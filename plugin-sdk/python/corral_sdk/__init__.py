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

from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports import types as wit

__all__ = ["Agent", "AgentError", "Context", "guest", "schema_of"]


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


class Agent:
    """Subclass this. Set `name`, `version`, `description`, and `Input`/`Output` (dataclasses) or the schemas."""

    name: str = "agent"
    version: str = "0.1.0"
    description: str = ""
    Input: Optional[type] = None
    Output: Optional[type] = None
    input_schema: Optional[Dict[str, Any]] = None
    output_schema: Optional[Dict[str, Any]] = None

    def run(self, ctx: Context, input: Any) -> Any:
        raise NotImplementedError("an agent implements run(self, ctx, input)")


_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(tp: Any) -> Dict[str, Any]:
    """A JSON Schema for a type hint: dataclasses, lists, dicts, Optional, Literal and primitives."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
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
        if len(rest) == 1:
            return schema_of(rest[0])
        return {"anyOf": [schema_of(a) for a in rest]}
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
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
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
                capabilities=[],
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
