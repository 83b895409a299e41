"""Agent: summarizes each of several texts (or each paragraph of a text artifact) by delegating it to the `summarize` agent (all at once, each under a carved fuel budget), and reports the summaries and the failures, optionally as an artifact; the Python face of delegation and artifacts."""

from dataclasses import dataclass, field
from typing import List, Optional

from corral_sdk import Agent, Artifact, Context, DelegateError, artifacts, guest


@dataclass
class Input:
    texts: List[str] = field(default_factory=list)
    document: Optional[Artifact] = None
    """A text artifact whose paragraphs (split at blank lines) are summarized after `texts`."""
    fuel_each: Optional[int] = None
    """Fuel carved for each summary; unset, an equal share."""
    report: bool = False
    """Also write the summaries, one per line, as a text/plain artifact."""


@dataclass
class Output:
    summaries: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    """The kind of each failure (`breached`, `not_granted`, ...)."""
    report: Optional[Artifact] = None


def paragraphs(document: Artifact) -> List[str]:
    """The document's paragraphs, read line by line (a chunk held at most)."""
    found, lines = [], []
    for line in artifacts.open_text(document):
        if line.strip():
            lines.append(line.rstrip("\n"))
        elif lines:
            found.append("\n".join(lines))
            lines = []
    if lines:
        found.append("\n".join(lines))
    return found


class Fanout(Agent):
    name = "fanout"
    version = "0.2.0"
    description = "Summarizes several texts, or the paragraphs of a text artifact, at once by delegating each to `summarize`."
    Input = Input
    Output = Output

    def run(self, ctx: Context, input: Input) -> Output:
        texts = list(input.texts)
        if input.document is not None:
            texts += paragraphs(input.document)
        requests = [
            {"agent": "summarize", "payload": {"text": t, "max_sentences": 1}, "budget": {"fuel": input.fuel_each}}
            for t in texts
        ]
        out = Output()
        for answer in ctx.delegate_all(requests):
            if isinstance(answer, DelegateError):
                out.errors.append(answer.kind)
            else:
                out.summaries.append(answer["summary"])
        if input.report:
            writer = artifacts.Writer("text/plain")
            for s in out.summaries:
                writer.write(s + "\n")
            out.report = writer.finish()
        return out


Guest = guest(Fanout())
