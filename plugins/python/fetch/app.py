"""Agent: sends the HTTP requests it is given through the host (redirects followed, each hop checked) and reports what came back; the Python twin of the Rust `fetch` agent."""

from dataclasses import dataclass, field
from typing import List, Optional

from corral_sdk import Agent, Context, guest, http


@dataclass
class Call:
    url: str
    method: str = "GET"
    body: str = ""
    follow_redirects: bool = True


@dataclass
class Input:
    """Requests to send, in order."""

    requests: List[Call]
    fail_fast: bool = False
    """Fail the call at the first failed request, instead of reporting it."""


@dataclass
class Fetched:
    status: Optional[int] = None
    url: Optional[str] = None
    """The URL that answered, after redirects."""
    bytes: int = 0
    text: str = ""
    """The body's first 200 characters."""
    error: Optional[str] = None


@dataclass
class Output:
    """One entry per request: its response or its error."""

    results: List[Fetched] = field(default_factory=list)


class Fetch(Agent):
    name = "fetch"
    version = "0.1.0"
    description = "Sends the HTTP requests it is given (wherever the operator's grants allow) and reports each response or error."
    http = ["*"]
    Input = Input
    Output = Output

    def run(self, ctx: Context, input: Input) -> Output:
        out = Output()
        for call in input.requests:
            request = http.Request(call.method, call.url).data(call.body.encode())
            try:
                r = request.follow_redirects(call.follow_redirects).send()
            except http.HttpError as e:
                if input.fail_fast:
                    raise  # the SDK reports it: transient for a transport failure, else permanent
                out.results.append(Fetched(error=str(e)))
                continue
            out.results.append(
                Fetched(status=r.status, url=r.url, bytes=len(r.body), text=r.text()[:200])
            )
        return out


Guest = guest(Fetch())
