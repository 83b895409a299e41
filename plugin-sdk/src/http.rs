//! Outbound HTTP for agents (contract 0.2.0): a small blocking client over `wasi:http`, following redirects, each hop checked by the host.
//!
//! Request the access in [`Agent::capabilities`](crate::Agent::capabilities)
//! with `Capability::Http("https://api.example.com/v1".into())`; the host
//! sends a request only if a grant allows it, and refuses addresses on its
//! own network unless a grant names the address.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// The most redirects [`Request::send`] follows.
pub const MAX_REDIRECTS: u32 = 5;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused it: no grant allows it, or it would reach the
    /// host's own network. Retrying will not help.
    Denied(String),
    /// A per-call quota (requests, request or response bytes) ran out.
    Quota(String),
    /// The URL or request is malformed.
    Invalid(String),
    /// DNS, connection, TLS, protocol or timeout: possibly transient.
    Transport(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
            HttpError::Quota(m) => write!(f, "HTTP quota used up: {m}"),
            HttpError::Invalid(m) => write!(f, "invalid request: {m}"),
            HttpError::Transport(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A response, its body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL that answered, after redirects.
    pub url: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (invalid bytes replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::Invalid(format!("the response from {} is not JSON: {e}", self.url))
        })
    }
}

/// A request to build and [`send`](Request::send).
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    follow_redirects: bool,
}

/// `GET url`, following redirects.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::new("GET", url).send()
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            follow_redirects: true,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body, with its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("a Serialize value serializes");
        self.header("content-type", "application/json").body(body)
    }

    /// Whether 3xx responses are followed (the default); each hop is a new
    /// request the host checks against the grants.
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.follow_redirects = follow;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let mut current = self;
        for _ in 0..=MAX_REDIRECTS {
            let response = current.send_once()?;
            let location = response.header("location").map(str::to_owned);
            let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
            match location {
                Some(location) if redirect && current.follow_redirects => {
                    let url = resolve(&current.url, &location)?;
                    // 303, and 301/302 after a POST, turn into a GET without a body.
                    let keep = matches!(response.status, 307 | 308)
                        || (current.method != "POST" && response.status != 303);
                    if !keep {
                        current.method = "GET".into();
                        current.body.clear();
                    }
                    current.url = url;
                }
                _ => return Ok(response),
            }
        }
        Err(HttpError::Transport(format!(
            "more than {MAX_REDIRECTS} redirects, the last to {}",
            current.url
        )))
    }

    fn send_once(&self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        let mut fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        // A known length lets the host refuse a body over its quota before
        // anything is sent, and spares servers a chunked upload.
        if !self.body.is_empty() && !fields.iter().any(|(k, _)| k == "content-length") {
            let length = self.body.len().to_string().into_bytes();
            fields.push(("content-length".into(), length));
        }
        let headers = Fields::from_list(&fields)
            .map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::Invalid(format!("{what} of {}", self.url));
        request
            .set_method(&method(&self.method))
            .map_err(|_| invalid("the method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| invalid("the scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|_| invalid("the host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|_| invalid("the path"))?;
        let body = request.body().map_err(|_| invalid("the body"))?;
        let pending = outgoing_handler::handle(request, None).map_err(error)?;
        let written = write_body(body, &self.body);
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(error(code)),
            _ => return Err(HttpError::Transport("no response".into())),
        };
        // The response's error, if any, explains a failed upload better
        // than the closed stream does.
        written?;
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|_| HttpError::Transport("the response body was taken".into()))?;
        Ok(Response {
            status,
            headers,
            body: read_body(incoming)?,
            url: self.url.clone(),
        })
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    {
        let stream = body
            .write()
            .map_err(|_| HttpError::Transport("the request body was taken".into()))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None).map_err(error)
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|_| HttpError::Transport("the response body was taken".into()))?;
        // Waits through `wasi:io/poll`, where the host lets other calls run.
        let ready = stream.subscribe();
        loop {
            match stream.read(64 * 1024) {
                Ok(chunk) if chunk.is_empty() => ready.block(),
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e)),
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(out)
}

fn stream_error(e: StreamError) -> HttpError {
    match e {
        StreamError::LastOperationFailed(err) => match wasip2::http::types::http_error_code(&err) {
            Some(code) => error(code),
            // A body error reaches the guest as text only (wasmtime's
            // wasi:http does not carry its code through the stream): the
            // host's quota refusal is recognized by its wording.
            None => {
                let text = err.to_debug_string();
                if text.contains("body size exceeds limit") {
                    HttpError::Quota(text)
                } else {
                    HttpError::Transport(text)
                }
            }
        },
        StreamError::Closed => HttpError::Transport("the stream closed".into()),
    }
}

fn error(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => {
            HttpError::Denied("no grant allows this request (see the call's receipt)".into())
        }
        ErrorCode::DestinationIpProhibited => HttpError::Denied(
            "the host resolves to an address on the host's own network, which no grant names"
                .into(),
        ),
        ErrorCode::ConnectionLimitReached => {
            HttpError::Quota("the call's request quota is used up".into())
        }
        ErrorCode::HttpRequestBodySize(n) | ErrorCode::HttpResponseBodySize(n) => {
            HttpError::Quota(format!("the call's body byte quota ({n:?}) is used up"))
        }
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => {
            HttpError::Invalid(format!("{code:?}"))
        }
        other => HttpError::Transport(format!("{other:?}")),
    }
}

fn method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// An absolute http(s) URL split the way `wasi:http` takes it.
struct Url {
    https: bool,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(HttpError::Invalid(format!(
                "`{url}` is not an http:// or https:// URL"
            )));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::Invalid(format!("`{url}` has no usable host")));
        }
        let path_and_query = match tail {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path_and_query,
        })
    }
}

/// `location` against `base`: an absolute URL, or an absolute path on the
/// same origin.
fn resolve(base: &str, location: &str) -> Result<String, HttpError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let url = Url::parse(base)?;
    let scheme = if url.https { "https" } else { "http" };
    if let Some(path) = location.strip_prefix('/')
        && !path.starts_with('/')
    {
        return Ok(format!("{scheme}://{}/{path}", url.authority));
    }
    Err(HttpError::Invalid(format!(
        "a redirect to `{location}`, which is neither an absolute URL nor an absolute path"
    )))
}
