//! Sends one allowed request: resolves the host, refuses addresses on the host's own network unless the grant names them, connects to the checked address itself (so a second lookup cannot differ), adds TLS, and drives HTTP/1.1.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use http::{Request, Response};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::{self, ClientConfig, pki_types::ServerName};
use wasmtime_wasi_http::Error;
use wasmtime_wasi_http::io::TokioIo;

use super::address::internal_range;
use super::grant::Target;

/// Why a request was not sent or did not get a response.
pub(crate) struct SendFailure {
    pub error: Error,
    pub detail: String,
    /// The address was on the host's network: the grant line that reaches it.
    pub blocked: Option<String>,
}

impl SendFailure {
    fn failed(error: Error, detail: String) -> Self {
        Self {
            error,
            detail,
            blocked: None,
        }
    }
}

/// The response's head and body, and the connection's remaining work.
pub(crate) type Sent = (
    Response<hyper::body::Incoming>,
    Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
);

/// Sends `req` to `target` by `deadline`. `req`'s URI still has the scheme
/// and authority; it is rewritten to origin form here.
pub(crate) async fn send<B>(
    mut req: Request<B>,
    target: &Target,
    deadline: Instant,
) -> Result<Sent, SendFailure>
where
    B: http_body::Body<Data = bytes::Bytes, Error = Error> + Send + Unpin + 'static,
{
    let timeout = || {
        SendFailure::failed(
            Error::ConnectionTimeout,
            "the call's deadline passed".into(),
        )
    };
    to_origin_form(&mut req, target)?;
    let stream = tokio::time::timeout_at(deadline, connect(target, deadline))
        .await
        .map_err(|_| timeout())??;
    let io: Box<dyn Io> = if target.https {
        let name = ServerName::try_from(target.host.clone()).map_err(|e| {
            SendFailure::failed(Error::TlsProtocolError, format!("TLS server name: {e}"))
        })?;
        let tls = tokio_rustls::TlsConnector::from(tls_config());
        let stream = tokio::time::timeout_at(deadline, tls.connect(name, stream))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| SendFailure::failed(Error::TlsProtocolError, format!("TLS: {e}")))?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendFailure::failed(Error::HttpProtocolError, format!("HTTP/1.1: {e}")))?;

    let mut conn = Some(Box::pin(conn));
    let mut pending = std::pin::pin!(sender.send_request(req));
    // The connection must be driven while the response is awaited.
    let responded = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = pending.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(c) = conn.as_mut()
            && let Poll::Ready(done) = c.as_mut().poll(cx)
        {
            conn = None;
            if let Err(e) = done {
                return Poll::Ready(Err(e));
            }
            return pending.as_mut().poll(cx);
        }
        Poll::Pending
    });
    let response = tokio::time::timeout_at(deadline, responded)
        .await
        .map_err(|_| timeout())?
        .map_err(|e| SendFailure::failed(Error::HttpProtocolError, format!("HTTP/1.1: {e}")))?;
    let rest: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> = Box::pin(async move {
        match conn {
            Some(c) => c.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((response, rest))
}

/// Rewrites `req` for the origin server: the path and query only (a guest
/// may give a query without a path, `?x`, which means `/?x`), and the
/// `Host` header from the checked host and port, never the guest's text.
fn to_origin_form<B>(req: &mut Request<B>, target: &Target) -> Result<(), SendFailure> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let origin = if pq.starts_with('/') {
        pq.to_owned()
    } else {
        format!("/{pq}")
    };
    *req.uri_mut() = origin.parse().map_err(|e| {
        SendFailure::failed(
            Error::HttpRequestUriInvalid,
            format!("the request's path is not valid: {e}"),
        )
    })?;
    let value = http::HeaderValue::from_str(&target.host_header())
        .map_err(|e| SendFailure::failed(Error::HttpRequestUriInvalid, format!("the host: {e}")))?;
    req.headers_mut().insert(http::header::HOST, value);
    Ok(())
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Resolves `target` and connects to the first address it may reach. An
/// address on the host's network is skipped unless the request names that
/// address itself (the grant then matched it exactly).
async fn connect(target: &Target, deadline: Instant) -> Result<TcpStream, SendFailure> {
    let named: Option<IpAddr> = target.host.parse().ok();
    let addrs: Vec<SocketAddr> = match named {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                let error = Error::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                };
                SendFailure::failed(error, format!("cannot resolve `{}`: {e}", target.host))
            })?
            .collect(),
    };
    let mut blocked = None;
    let mut reachable = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match internal_range(addr.ip()) {
            Some(range) if named.is_none() => {
                blocked.get_or_insert((addr, range));
            }
            _ => reachable.push(addr),
        }
    }
    if !reachable.is_empty() {
        return in_turn(&reachable, deadline).await.map_err(|(addr, why)| {
            let error = if why.starts_with(NO_ANSWER) {
                Error::ConnectionTimeout
            } else {
                Error::ConnectionRefused
            };
            SendFailure::failed(error, format!("cannot connect to {addr}: {why}"))
        });
    }
    match blocked {
        Some((addr, range)) => {
            let scheme = if target.https { "https" } else { "http" };
            let line = format!("{scheme}://{}", addr);
            Err(SendFailure {
                error: Error::DestinationIpProhibited,
                detail: format!(
                    "`{}` resolves to {}, a {range} address; only a grant naming the address itself reaches it",
                    target.host,
                    addr.ip()
                ),
                blocked: Some(line),
            })
        }
        None => Err(SendFailure::failed(
            Error::DestinationNotFound,
            format!("`{}` resolves to no address", target.host),
        )),
    }
}

/// How an attempt that timed out is described.
const NO_ANSWER: &str = "no answer within";

/// The least time an address is given before the next one is tried.
const MIN_ATTEMPT: std::time::Duration = std::time::Duration::from_millis(250);

/// Connects to the first of `addrs` that answers. Each attempt gets an equal
/// share of the time left (at least [`MIN_ATTEMPT`]), so an address that
/// never answers cannot spend the whole deadline before the next is tried.
/// On failure, the last address tried and why.
async fn in_turn(
    addrs: &[SocketAddr],
    deadline: Instant,
) -> Result<TcpStream, (SocketAddr, String)> {
    let mut last = None;
    for (i, &addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = (left / (addrs.len() - i) as u32).max(MIN_ATTEMPT).min(left);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some((addr, e.to_string())),
            Err(_) => last = Some((addr, format!("{NO_ANSWER} {} ms", share.as_millis()))),
        }
    }
    Err(last.unwrap_or_else(|| (SocketAddr::from(([0, 0, 0, 0], 0)), "no address".into())))
}

/// One TLS client configuration for the process: the web's roots, ring.
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A loopback address whose accept queue is full: a connection to it
    /// neither succeeds nor fails, its SYN is dropped.
    fn silent_address() -> (
        tokio::net::TcpListener,
        Vec<std::net::TcpStream>,
        SocketAddr,
    ) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return (listener, held, addr);
                }
                Err(e) => panic!("filling the accept queue: {e}"),
            }
        }
        panic!("the accept queue of {addr} never filled");
    }

    #[tokio::test]
    async fn an_address_that_never_answers_leaves_time_for_the_next() {
        let (_silent, _held, silent) = silent_address();
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(4);
        // As `send` calls it: within the call's deadline.
        let stream = tokio::time::timeout_at(deadline, in_turn(&[silent, good_addr], deadline))
            .await
            .expect("the first address kept the whole deadline")
            .expect("the second address answers");
        assert_eq!(stream.peer_addr().unwrap(), good_addr);
    }

    #[tokio::test]
    async fn a_failure_names_the_last_address_and_why() {
        let (_silent, _held, silent) = silent_address();
        let deadline = Instant::now() + Duration::from_millis(600);
        let (addr, why) = in_turn(&[silent], deadline).await.unwrap_err();
        assert_eq!(addr, silent);
        assert!(why.starts_with(NO_ANSWER), "{why}");
    }
}
