"""Outbound HTTP for agents (contract 0.2.0): a small blocking client over `wasi:http`, following redirects, each hop checked by the host.

The agent lists where it may go in `http` (such as
`["https://api.example.com/v1"]`, or `["*"]` for wherever the operator's
grants allow) and is built against the `agent-http` world
(`componentize-py -d wit -w agent-http ...`). The host sends a request only
if a grant allows it, and refuses addresses on its own network unless a
grant names the address.

    from corral_sdk import http
    page = http.get("https://api.example.com/v1/items")
    items = page.json()
    made = http.Request("POST", url).json({"name": "x"}).send()
"""

import json
from typing import Any, List, Optional, Tuple

from componentize_py_types import Err

try:
    from wit_world.imports import outgoing_handler
    from wit_world.imports import streams
    from wit_world.imports import wasi_http_types as t
except ImportError:  # built against `agent`: no wasi:http imported
    outgoing_handler = None

__all__ = [
    "MAX_REDIRECTS",
    "HttpError",
    "Denied",
    "Quota",
    "Invalid",
    "Transport",
    "Request",
    "Response",
    "get",
]

MAX_REDIRECTS = 5
"""The most redirects `Request.send` follows."""

# Bytes written per call: `blocking-write-and-flush` takes at most 4096.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024


class HttpError(Exception):
    """Why a request failed. The subclass says what to do about it."""

    kind = "transport"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Denied(HttpError):
    """The host refused it: no grant allows it, or it would reach the host's own network. Retrying will not help."""

    kind = "denied"

    def __str__(self) -> str:
        return f"request denied by the host: {self.message}"


class Quota(HttpError):
    """A per-call quota (requests, request or response bytes) ran out."""

    kind = "quota"

    def __str__(self) -> str:
        return f"HTTP quota used up: {self.message}"


class Invalid(HttpError):
    """The URL or request is malformed."""

    kind = "invalid"

    def __str__(self) -> str:
        return f"invalid request: {self.message}"


class Transport(HttpError):
    """DNS, connection, TLS, protocol or timeout: possibly transient."""

    kind = "transport"

    def __str__(self) -> str:
        return f"request failed: {self.message}"


class Response:
    """A response, its body read whole."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes, url: str):
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url
        """The URL that answered, after redirects."""

    def header(self, name: str) -> Optional[str]:
        """The first header named `name` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def text(self) -> str:
        """The body as UTF-8 text (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise Invalid(f"the response from {self.url} is not JSON: {e}") from None


def get(url: str) -> Response:
    """`GET url`, following redirects."""
    return Request("GET", url).send()


class Request:
    """A request to build and `send`."""

    def __init__(self, method: str, url: str):
        self.method = method.upper()
        self.url = url
        self.headers: List[Tuple[str, str]] = []
        self.body = b""
        self.follow = True

    def header(self, name: str, value: str) -> "Request":
        self.headers.append((name, value))
        return self

    def data(self, body: bytes) -> "Request":
        """The request body, as bytes (or text, sent as UTF-8)."""
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        return self

    def json(self, value: Any) -> "Request":
        """A JSON body, with its content type."""
        return self.header("content-type", "application/json").data(json.dumps(value).encode())

    def follow_redirects(self, follow: bool) -> "Request":
        """Whether 3xx responses are followed (the default); each hop is a new request the host checks against the grants."""
        self.follow = follow
        return self

    def send(self) -> Response:
        """Sends the request and reads the whole response."""
        if outgoing_handler is None:
            raise Invalid(
                "this agent was built without wasi:http; build it against the "
                "`agent-http` world (componentize-py -w agent-http)"
            )
        method, url, body = self.method, self.url, self.body
        for _ in range(MAX_REDIRECTS + 1):
            response = _send_once(method, url, self.headers, body)
            location = response.header("location")
            if not (self.follow and location and response.status in (301, 302, 303, 307, 308)):
                return response
            url = _resolve(url, location)
            # 303, and 301/302 after a POST, turn into a GET without a body.
            keep = response.status in (307, 308) or (method != "POST" and response.status != 303)
            if not keep:
                method, body = "GET", b""
        raise Transport(f"more than {MAX_REDIRECTS} redirects, the last to {url}")


def _send_once(method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
    https, authority, path = _split(url)
    fields = [(k.lower(), v.encode()) for k, v in headers]
    # A known length lets the host refuse a body over its quota before
    # anything is sent, and spares servers a chunked upload.
    if body and not any(k == "content-length" for k, _ in fields):
        fields.append(("content-length", str(len(body)).encode()))
    try:
        request = t.OutgoingRequest(t.Fields.from_list(fields))
    except Err as e:
        raise Invalid(f"headers: {e.value}") from None
    for what, setter, value in (
        ("the method", request.set_method, _method(method)),
        ("the scheme", request.set_scheme, t.Scheme_Https() if https else t.Scheme_Http()),
        ("the host", request.set_authority, authority),
        ("the path", request.set_path_with_query, path),
    ):
        try:
            setter(value)
        except Err:
            raise Invalid(f"{what} of {url}") from None
    outgoing = request.body()
    try:
        pending = outgoing_handler.handle(request, None)
    except Err as e:
        raise _error(e.value) from None
    written = _write_body(outgoing, body)
    with pending:
        with pending.subscribe() as ready:
            ready.block()
        answer = pending.get()
    if answer is None or isinstance(answer, Err):
        raise Transport("no response")
    if isinstance(answer.value, Err):
        raise _error(answer.value.value)
    # The response's error, if any, explains a failed upload better than
    # the closed stream does.
    if written is not None:
        raise written
    with answer.value.value as response:
        with response.headers() as fields_in:
            headers_in = [(k, v.decode("utf-8", errors="replace")) for k, v in fields_in.entries()]
        status = response.status()
        try:
            incoming = response.consume()
        except Err:
            raise Transport("the response body was taken") from None
    return Response(status, headers_in, _read_body(incoming), url)


def _write_body(outgoing: Any, body: bytes) -> Optional[HttpError]:
    """Writes and finishes the body; the failure, if any, is returned for later."""
    try:
        with outgoing.write() as stream:
            for i in range(0, len(body), _WRITE_CHUNK):
                stream.blocking_write_and_flush(body[i : i + _WRITE_CHUNK])
    except Err as e:
        outgoing.__exit__(None, None, None)
        return _stream_error(e.value)
    try:
        t.OutgoingBody.finish(outgoing, None)
    except Err as e:
        return _error(e.value)
    return None


def _read_body(incoming: Any) -> bytes:
    out = bytearray()
    try:
        with incoming.stream() as stream:
            # Waits through `wasi:io/poll`, where the host lets other calls run.
            with stream.subscribe() as ready:
                while True:
                    try:
                        chunk = stream.read(_READ_CHUNK)
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        raise _stream_error(e.value) from None
                    if chunk:
                        out += chunk
                    else:
                        ready.block()
    finally:
        t.IncomingBody.finish(incoming).__exit__(None, None, None)
    return bytes(out)


def _stream_error(e: Any) -> HttpError:
    if isinstance(e, streams.StreamError_Closed):
        return Transport("the stream closed")
    with e.value as err:
        code = t.http_error_code(err)
        if code is not None:
            return _error(code)
        # A body error reaches the guest as text only (wasmtime's wasi:http
        # does not carry its code through the stream): the host's quota
        # refusal is recognized by its wording.
        text = err.to_debug_string()
    return Quota(text) if "body size exceeds limit" in text else Transport(text)


def _error(code: Any) -> HttpError:
    if isinstance(code, t.ErrorCode_HttpRequestDenied):
        return Denied("no grant allows this request (see the call's receipt)")
    if isinstance(code, t.ErrorCode_DestinationIpProhibited):
        return Denied("the host resolves to an address on the host's own network, which no grant names")
    if isinstance(code, t.ErrorCode_ConnectionLimitReached):
        return Quota("the call's request quota is used up")
    if isinstance(code, (t.ErrorCode_HttpRequestBodySize, t.ErrorCode_HttpResponseBodySize)):
        return Quota(f"the call's body byte quota ({code.value}) is used up")
    if isinstance(code, (t.ErrorCode_HttpRequestUriInvalid, t.ErrorCode_HttpRequestMethodInvalid)):
        return Invalid(type(code).__name__.removeprefix("ErrorCode_"))
    return Transport(f"{type(code).__name__.removeprefix('ErrorCode_')} {getattr(code, 'value', '')}".strip())


_METHODS = {
    "GET": "Method_Get",
    "HEAD": "Method_Head",
    "POST": "Method_Post",
    "PUT": "Method_Put",
    "DELETE": "Method_Delete",
    "OPTIONS": "Method_Options",
    "PATCH": "Method_Patch",
}


def _method(m: str) -> Any:
    name = _METHODS.get(m)
    return getattr(t, name)() if name else t.Method_Other(m)


def _split(url: str) -> Tuple[bool, str, str]:
    """An absolute http(s) URL split the way `wasi:http` takes it: (https, authority, path-with-query)."""
    if url.startswith("https://"):
        https, rest = True, url[len("https://") :]
    elif url.startswith("http://"):
        https, rest = False, url[len("http://") :]
    else:
        raise Invalid(f"`{url}` is not an http:// or https:// URL")
    rest = rest.split("#", 1)[0]
    end = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    authority, tail = rest[:end], rest[end:]
    if not authority or "@" in authority:
        raise Invalid(f"`{url}` has no usable host")
    if not tail:
        tail = "/"
    elif tail.startswith("?"):
        tail = "/" + tail
    return https, authority, tail


def _resolve(base: str, location: str) -> str:
    """`location` against `base`: an absolute URL, or an absolute path on the same origin."""
    if location.startswith(("http://", "https://")):
        return location
    https, authority, _ = _split(base)
    if location.startswith("/") and not location.startswith("//"):
        return f"{'https' if https else 'http'}://{authority}{location}"
    raise Invalid(f"a redirect to `{location}`, which is neither an absolute URL nor an absolute path")
