"""Artifacts (contract 0.2.0): large data passed between agents by content-addressed reference, written and read in chunks of at most 1 MiB.

A packet names an artifact as `{"$artifact": "sha256:...", "media_type":
..., "size": ...}`; in a dataclass, a field of type `Artifact` is such a
reference (its schema is `Artifact.SCHEMA`). A call may read the artifacts
its input names and those it wrote.

    from corral_sdk import artifacts
    from corral_sdk.artifacts import Artifact

    w = artifacts.Writer("text/plain")
    for part in parts:
        w.write(part.encode())          # any size; sent a megabyte at a time
    report: Artifact = w.finish()

    for line in artifacts.open_text(input.document):   # a megabyte held at most
        ...
"""

import io
from typing import Any, Dict, Iterator, Union

from componentize_py_types import Err
from wit_world.imports import artifacts as wit

# The package imports this module last, once these exist.
from . import AgentError, _case

__all__ = ["CHUNK", "Artifact", "ArtifactError", "Writer", "put", "get", "open", "open_text", "chunks"]

CHUNK = 1 << 20
"""The largest chunk the host takes or gives at once."""


class Artifact:
    """A reference to a stored artifact; compare, print, or hand it on in an output."""

    SCHEMA: Dict[str, Any] = {
        "title": "corral artifact reference",
        "type": "object",
        "properties": {
            "$artifact": {
                "type": "string",
                "pattern": "^sha256:[0-9a-f]{64}$",
                "description": "Content digest: `sha256:` and 64 lowercase hex digits.",
            },
            "media_type": {"type": "string", "description": "Media type, such as `text/plain`."},
            "size": {"type": "integer", "minimum": 0, "description": "Size in bytes."},
        },
        "required": ["$artifact", "media_type", "size"],
        "additionalProperties": False,
    }
    """The JSON Schema of a reference (as the host publishes it)."""

    __slots__ = ("digest", "media_type", "size")

    def __init__(self, digest: str, media_type: str, size: int):
        self.digest = digest
        self.media_type = media_type
        self.size = size

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "Artifact":
        return cls(value["$artifact"], value["media_type"], int(value["size"]))

    def to_json(self) -> Dict[str, Any]:
        return {"$artifact": self.digest, "media_type": self.media_type, "size": self.size}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Artifact) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"Artifact({self.digest!r}, {self.media_type!r}, {self.size})"


def _error(e: Err) -> "ArtifactError":
    return ArtifactError(_case(e.value), str(e.value.value))


class ArtifactError(AgentError):
    """The host refused a write or a read; `kind` is `not_found`, `quota`, `invalid` or `unavailable` (the store failed: transient)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"artifact {kind.replace('_', ' ')}: {message}", "transient" if kind == "unavailable" else "permanent")
        self.kind = kind


class Writer:
    """An artifact being written: `write` as often as needed, then `finish` once for its reference. A call holds at most 16 writers at once."""

    def __init__(self, media_type: str):
        self._writer = wit.Writer(media_type)

    def write(self, data: Union[bytes, bytearray, memoryview, str]) -> int:
        """Appends `data` (a `str` is written as UTF-8), a chunk at a time."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data)
        for at in range(0, len(view), CHUNK):
            try:
                self._writer.write(bytes(view[at : at + CHUNK]))
            except Err as e:
                raise _error(e) from None
        return len(view)

    def finish(self) -> Artifact:
        """Stores what was written and gives its reference; the writer is spent."""
        try:
            a = self._writer.finish()
        except Err as e:
            raise _error(e) from None
        return Artifact(a.digest, a.media_type, a.size)


def put(data: Union[bytes, str], media_type: str) -> Artifact:
    """Stores `data` as one artifact of `media_type`."""
    w = Writer(media_type)
    w.write(data)
    return w.finish()


class _Raw(io.RawIOBase):
    def __init__(self, artifact: Artifact):
        self._digest = artifact.digest
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), CHUNK)
        try:
            chunk = wit.read(self._digest, self._offset, want)
        except Err as e:
            raise _error(e) from None
        n = len(chunk)
        buffer[:n] = chunk
        self._offset += n
        return n


def open(artifact: Artifact) -> io.BufferedReader:  # noqa: A001 (as `io.open`)
    """A binary file object over the artifact: `read(n)`, `readline()`, iteration; it holds a chunk at most."""
    return io.BufferedReader(_Raw(artifact), buffer_size=CHUNK)


def open_text(artifact: Artifact, encoding: str = "utf-8") -> io.TextIOWrapper:
    """A text file object over the artifact, for reading it line by line."""
    return io.TextIOWrapper(open(artifact), encoding=encoding, errors="replace")


def get(artifact: Artifact) -> bytes:
    """The whole artifact in memory; for a large one, read it with `open`."""
    return open(artifact).read()


def chunks(artifact: Artifact) -> Iterator[bytes]:
    """The artifact's bytes, a chunk of at most 1 MiB at a time."""
    raw = _Raw(artifact)
    buffer = bytearray(CHUNK)
    while True:
        n = raw.readinto(buffer)
        if n == 0:
            return
        yield bytes(buffer[:n])
