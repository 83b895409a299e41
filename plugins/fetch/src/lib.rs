//! Agent: sends the HTTP requests it is given through the host (redirects followed, each hop checked) and reports what came back.

use corral_sdk::http::Request;
use corral_sdk::{Agent, AgentError, Capability, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Fetch;

/// Requests to send, in order.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub requests: Vec<Call>,
    /// Fail the call at the first failed request, instead of reporting it.
    #[serde(default)]
    pub fail_fast: bool,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub body: String,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Send `GET` with exactly this authority and path-with-query through
    /// `wasi:http`, bypassing the SDK's URL handling (the host's hostile-
    /// input tests: `user@host`, a path of `?x`). `url` gives the scheme.
    #[serde(default)]
    pub raw: Option<Raw>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub authority: String,
    pub path_with_query: String,
}

fn get() -> String {
    "GET".into()
}

fn yes() -> bool {
    true
}

/// One entry per request: its response or its error.
#[derive(Deserialize, Serialize, JsonSchema)]
pub struct Output {
    pub results: Vec<Fetched>,
}

#[derive(Deserialize, Serialize, JsonSchema, Default)]
pub struct Fetched {
    pub status: Option<u16>,
    /// The URL that answered, after redirects.
    pub url: Option<String>,
    pub bytes: usize,
    /// The body's first 200 characters.
    pub text: String,
    pub error: Option<String>,
}

impl Agent for Fetch {
    type Input = Input;
    type Output = Output;

    fn capabilities() -> Vec<Capability> {
        vec![Capability::Http("*".into())]
    }

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let mut results = Vec::new();
        for call in input.requests {
            if let Some(raw) = &call.raw {
                let https = call.url.starts_with("https://");
                results.push(match raw_get(https, raw) {
                    Ok(status) => Fetched {
                        status: Some(status),
                        ..Fetched::default()
                    },
                    Err(e) => Fetched {
                        error: Some(e),
                        ..Fetched::default()
                    },
                });
                continue;
            }
            let sent = Request::new(&call.method, &call.url)
                .body(call.body.into_bytes())
                .follow_redirects(call.follow_redirects)
                .send();
            match sent {
                Ok(r) => results.push(Fetched {
                    status: Some(r.status),
                    url: Some(r.url.clone()),
                    bytes: r.body.len(),
                    text: r.text().chars().take(200).collect(),
                    error: None,
                }),
                Err(e) if input.fail_fast => return Err(e.into()),
                Err(e) => results.push(Fetched {
                    error: Some(e.to_string()),
                    ..Fetched::default()
                }),
            }
        }
        Ok(Output { results })
    }
}

/// A `GET` built field by field, as a hostile guest could.
fn raw_get(https: bool, raw: &Raw) -> Result<u16, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| "scheme refused")?;
    request
        .set_authority(Some(&raw.authority))
        .map_err(|_| "authority refused by wasi:http")?;
    request
        .set_path_with_query(Some(&raw.path_with_query))
        .map_err(|_| "path refused by wasi:http")?;
    let body = request.body().map_err(|_| "no body")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(code))) => Err(format!("{code:?}")),
        _ => Err("no response".into()),
    }
}

corral_sdk::export_agent!(Fetch);
