"""Agent: summarizes each of several texts by delegating it to the `summarize` agent (all at once, each under a carved fuel budget), and reports the summaries and the failures; the Python face of delegation."""

from dataclasses import dataclass, field
from typing import List, Optional

from corral_sdk import Agent, Context, DelegateError, guest


@dataclass
class Input:
    texts: List[str]
    fuel_each: Optional[int] = None
    """Fuel carved for each summary; unset, an equal share."""


@dataclass
class Output:
    summaries: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    """The kind of each failure (`breached`, `not_granted`, ...)."""


class Fanout(Agent):
    name = "fanout"
    version = "0.1.0"
    description = "Summarizes several texts at once by delegating each to `summarize`."
    Input = Input
    Output = Output

    def run(self, ctx: Context, input: Input) -> Output:
        requests = [
            {"agent": "summarize", "payload": {"text": t, "max_sentences": 1}, "budget": {"fuel": input.fuel_each}}
            for t in input.texts
        ]
        out = Output()
        for answer in ctx.delegate_all(requests):
            if isinstance(answer, DelegateError):
                out.errors.append(answer.kind)
            else:
                out.summaries.append(answer["summary"])
        return out


Guest = guest(Fanout())
