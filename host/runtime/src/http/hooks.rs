//! corral's `wasi:http` hook: every outgoing request is checked against the call's grants and quotas, recorded, and only then sent.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Request;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::body::{Counted, Direction};
use super::grant::{HttpGrant, Target};
use super::record::{HttpCallRecord, HttpLog, HttpOutcome};
use super::send::send;

/// The per-call quotas on outbound HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpQuota {
    pub requests: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The hook of one call.
pub(crate) struct HttpPolicy {
    pub grants: Arc<[HttpGrant]>,
    pub quota: HttpQuota,
    pub deadline: Instant,
    pub log: Arc<Mutex<HttpLog>>,
}

type Responded = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl HttpPolicy {
    /// Records a request refused before sending and answers the guest
    /// with `error`.
    fn refuse(&self, mut record: HttpCallRecord, error: Error) -> Responded {
        tracing::debug!(target: "corral::agent", method = %record.method, origin = %record.origin, outcome = %record.outcome, "outbound request refused");
        record.latency_us = 0;
        self.log.lock().unwrap().push(record);
        Box::new(async move { Err(error) })
    }

    /// The first check a request fails, as the record and the guest's error.
    fn check(
        &self,
        target: &Target,
        req: &Request<WasiBody>,
        record: &mut HttpCallRecord,
    ) -> Option<Error> {
        let log = self.log.lock().unwrap();
        if log.sent >= self.quota.requests {
            record.outcome = HttpOutcome::OverQuota;
            record.detail = Some(format!(
                "the call's quota of {} requests is used up (budget field `http_requests`)",
                self.quota.requests
            ));
            return Some(Error::ConnectionLimitReached);
        }
        if !self.grants.iter().any(|g| g.allows(target)) {
            record.outcome = HttpOutcome::Denied;
            record.grant = Some(target.grant_line());
            record.detail = Some(format!(
                "no grant allows {} {}{}",
                target.method,
                target.origin(),
                super::record::bounded(&target.path)
            ));
            return Some(Error::HttpRequestDenied);
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(n) = declared
            && log.bytes_out.saturating_add(n) > self.quota.request_bytes
        {
            record.outcome = HttpOutcome::OverQuota;
            record.detail = Some(format!(
                "a {n}-byte request body passes the call's quota of {} bytes (budget field `http_request_bytes`)",
                self.quota.request_bytes
            ));
            return Some(Error::HttpRequestBodySize(Some(self.quota.request_bytes)));
        }
        None
    }
}

/// The parts of `req` the grants are checked against; `None` when the URI
/// has no host, or user info (`user@host`), which would put text the
/// grants never saw into what the server reads.
fn target_of(req: &Request<WasiBody>) -> Option<Target> {
    let uri = req.uri();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    if uri.authority()?.as_str().contains('@') {
        return None;
    }
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = super::grant::canonical_host(host);
    Some(Target {
        method: req.method().as_str().to_owned(),
        https,
        host,
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        path: uri.path().to_owned(),
    })
}

impl WasiHttpHooks for HttpPolicy {
    /// corral writes `Host` itself, from the host and port it checked.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Responded {
        let Some(target) = target_of(&request) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let mut record = HttpCallRecord::new(&target.method, target.origin(), &target.path);
        if let Some(error) = self.check(&target, &request, &mut record) {
            return self.refuse(record, error);
        }
        let index = {
            let mut log = self.log.lock().unwrap();
            log.sent += 1;
            log.push(record)
        };
        let log = self.log.clone();
        let quota = self.quota;
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let request = request.map(|body| Counted {
            inner: body,
            log: log.clone(),
            index,
            direction: Direction::Out,
            limit: quota.request_bytes,
        });
        Box::new(async move {
            let start = Instant::now();
            let sent = send(request, &target, deadline).await;
            let mut l = log.lock().unwrap();
            // Past the record cap the request is counted, not recorded.
            let mut dropped = HttpCallRecord::dropped();
            let record = index
                .and_then(|i| l.records.get_mut(i))
                .unwrap_or(&mut dropped);
            record.latency_us = start.elapsed().as_micros() as u64;
            match sent {
                Ok((response, rest)) => {
                    record.status = Some(response.status().as_u16());
                    if record.outcome == HttpOutcome::Failed {
                        record.outcome = HttpOutcome::Ok;
                    }
                    drop(l);
                    let body = response.map(|incoming| {
                        Counted {
                            inner: incoming,
                            log,
                            index,
                            direction: Direction::In,
                            limit: quota.response_bytes,
                        }
                        .boxed_unsync()
                    });
                    Ok((body, Box::new(rest) as Box<dyn Future<Output = _> + Send>))
                }
                Err(failure) => {
                    if failure.blocked.is_some() {
                        record.outcome = HttpOutcome::Blocked;
                        record.grant = failure.blocked;
                    }
                    if record.outcome != HttpOutcome::OverQuota {
                        record.detail = Some(failure.detail);
                    }
                    Err(failure.error)
                }
            }
        })
    }
}
