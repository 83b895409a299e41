//! Outbound HTTP from 0.2.0 agents (the Rust `fetch` agent and its Python twin) against a server on loopback: an allowed request answered and recorded; a denied one never sent, the grant line quoted; a redirect out of the grant refused at the second hop; a host name that resolves to loopback refused at connect time; the per-call quotas and the deadline enforced.

#[path = "support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::http::{HttpGrant, HttpOutcome};
use corral::{Budget, CallError, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use support::agents;

/// The paths the server was asked for, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A server on loopback: `/public/hello`, `/public/big` (100 KB),
/// `/public/away` (a redirect to `/secret`), `/secret`, `/public/hang`.
async fn server() -> (Seen, u16) {
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(|State(s): State<Seen>, req: Request| async move {
            let path = req.uri().path().to_owned();
            s.0.lock().unwrap().push(path.clone());
            match path.as_str() {
                "/public/hello" | "/secret" => "hello".into_response(),
                "/public/big" => "x".repeat(100_000).into_response(),
                "/public/away" => (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, "/secret")],
                )
                    .into_response(),
                "/public/hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late".into_response()
                }
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        })
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, port)
}

/// The `fetch` agent in Rust and in Python: the SDKs' clients meet the
/// same host checks.
const FETCH_AGENTS: [&str; 2] = [agents::FETCH, agents::PY_FETCH];

fn runtime() -> Runtime {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache");
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir),
        ..Default::default()
    })
    .unwrap()
}

fn http(grants: &[String]) -> Grants {
    Grants {
        http: grants
            .iter()
            .map(|g| HttpGrant::parse(g).unwrap())
            .collect(),
        ..Grants::default()
    }
}

fn requests(urls: &[String], fail_fast: bool) -> HandoffPacket {
    let requests: Vec<Value> = urls.iter().map(|u| json!({ "url": u })).collect();
    HandoffPacket::new(
        "r",
        "s",
        json!({ "requests": requests, "fail_fast": fail_fast }),
    )
}

#[tokio::test]
async fn an_allowed_request_is_answered_and_recorded() {
    let rt = runtime();
    // The same requests from the Rust agent and from its Python twin.
    for fetch in FETCH_AGENTS {
        let (seen, port) = server().await;
        let agent = rt.load(fetch).await.unwrap();
        assert_eq!(agent.contract_version(), "0.2.0");
        let url = format!("http://127.0.0.1:{port}/public/hello");
        let out = rt
            .call(
                &agent,
                &requests(std::slice::from_ref(&url), true),
                &Budget::default(),
                &http(&[format!("GET http://127.0.0.1:{port}/public")]),
            )
            .await;
        let payload = out.result.unwrap().payload;
        assert_eq!(payload["results"][0]["status"], 200);
        assert_eq!(payload["results"][0]["text"], "hello");
        assert_eq!(seen.paths(), ["/public/hello"]);
        let record = &out.receipt.http_calls[0];
        assert_eq!(record.method, "GET");
        assert_eq!(record.origin, format!("http://127.0.0.1:{port}"));
        assert_eq!(record.path, "/public/hello");
        assert_eq!((record.status, record.bytes_in), (Some(200), 5));
        assert_eq!(record.outcome, HttpOutcome::Ok);
    }
}

#[tokio::test]
async fn a_request_no_grant_allows_is_never_sent_and_the_grant_line_is_quoted() {
    let rt = runtime();
    // The same requests from the Rust agent and from its Python twin.
    for fetch in FETCH_AGENTS {
        let (seen, port) = server().await;
        let agent = rt.load(fetch).await.unwrap();
        let url = format!("http://127.0.0.1:{port}/secret");
        // Granted elsewhere: another port.
        let grants = http(&[format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1))]);
        let out = rt
            .call(
                &agent,
                &requests(std::slice::from_ref(&url), false),
                &Budget::default(),
                &grants,
            )
            .await;
        // The guest saw the denial and reported it.
        let payload = out.result.unwrap().payload;
        let error = payload["results"][0]["error"].as_str().unwrap();
        assert!(error.contains("denied"), "{error}");
        let record = &out.receipt.http_calls[0];
        assert_eq!(record.outcome, HttpOutcome::Denied);
        let line = format!("http://127.0.0.1:{port}");
        assert_eq!(record.grant.as_deref(), Some(line.as_str()));

        // A guest that fails on the denial: the host names the grant to add.
        let out = rt
            .call(&agent, &requests(&[url], true), &Budget::default(), &grants)
            .await;
        let e = out.result.unwrap_err();
        assert!(matches!(e, CallError::PolicyDenied { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("--allow-http {line}")),
            "{e}"
        );
        assert!(seen.paths().is_empty(), "{:?}", seen.paths());
    }
}

#[tokio::test]
async fn an_agent_that_declares_http_gets_none_without_a_grant() {
    let rt = runtime();
    let agent = rt.load(agents::FETCH).await.unwrap();
    let out = rt
        .call(
            &agent,
            &requests(&[], false),
            &Budget::default(),
            &Grants::default(),
        )
        .await;
    let e = out.result.unwrap_err();
    assert!(matches!(e, CallError::PolicyDenied { .. }), "{e}");
    assert!(e.to_string().contains("--allow-http"), "{e}");
}

#[tokio::test]
async fn a_redirect_out_of_the_grant_is_refused_at_the_second_hop() {
    let rt = runtime();
    // The same requests from the Rust agent and from its Python twin.
    for fetch in FETCH_AGENTS {
        let (seen, port) = server().await;
        let agent = rt.load(fetch).await.unwrap();
        let url = format!("http://127.0.0.1:{port}/public/away");
        let out = rt
            .call(
                &agent,
                &requests(&[url], false),
                &Budget::default(),
                &http(&[format!("http://127.0.0.1:{port}/public")]),
            )
            .await;
        let payload = out.result.unwrap().payload;
        assert!(
            payload["results"][0]["error"]
                .as_str()
                .unwrap()
                .contains("denied")
        );
        let calls = &out.receipt.http_calls;
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].status, calls[0].outcome),
            (Some(302), HttpOutcome::Ok)
        );
        assert_eq!(
            (calls[1].path.as_str(), calls[1].outcome),
            ("/secret", HttpOutcome::Denied)
        );
        assert_eq!(seen.paths(), ["/public/away"]);
    }
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused_at_connect_time() {
    let rt = runtime();
    // The same requests from the Rust agent and from its Python twin.
    for fetch in FETCH_AGENTS {
        let (seen, port) = server().await;
        let agent = rt.load(fetch).await.unwrap();
        let url = format!("http://localhost:{port}/public/hello");
        let out = rt
            .call(
                &agent,
                &requests(&[url], true),
                &Budget::default(),
                &http(&[format!("http://localhost:{port}")]),
            )
            .await;
        let e = out.result.unwrap_err();
        assert!(matches!(e, CallError::PolicyDenied { .. }), "{e}");
        let record = &out.receipt.http_calls[0];
        assert_eq!(record.outcome, HttpOutcome::Blocked);
        let detail = record.detail.as_deref().unwrap();
        assert!(detail.contains("loopback"), "{detail}");
        // The grant that reaches it names the address itself.
        let grant = record.grant.as_deref().unwrap();
        assert!(
            grant.ends_with(&format!(":{port}")) && !grant.contains("localhost"),
            "{grant}"
        );
        assert!(seen.paths().is_empty(), "{:?}", seen.paths());
    }
}

#[tokio::test]
async fn the_request_and_response_byte_quotas_hold() {
    let rt = runtime();
    // The same requests from the Rust agent and from its Python twin.
    for fetch in FETCH_AGENTS {
        let (_seen, port) = server().await;
        let agent = rt.load(fetch).await.unwrap();
        let grants = http(&[format!("http://127.0.0.1:{port}")]);
        let hello = format!("http://127.0.0.1:{port}/public/hello");
        let budget = Budget {
            http_requests: 2,
            http_response_bytes: 50_000,
            ..Budget::default()
        };
        let urls = [
            hello.clone(),
            format!("http://127.0.0.1:{port}/public/big"),
            hello,
        ];
        let out = rt
            .call(&agent, &requests(&urls, false), &budget, &grants)
            .await;
        let payload = out.result.unwrap().payload;
        let results = payload["results"].as_array().unwrap();
        assert_eq!(results[0]["status"], 200);
        assert!(
            results[1]["error"].as_str().unwrap().contains("quota"),
            "{}",
            results[1]
        );
        assert!(
            results[2]["error"].as_str().unwrap().contains("quota"),
            "{}",
            results[2]
        );
        let calls = &out.receipt.http_calls;
        assert_eq!(calls[1].outcome, HttpOutcome::OverQuota);
        assert!(calls[1].bytes_in <= 50_000, "{}", calls[1].bytes_in);
        assert!(
            calls[1]
                .detail
                .as_deref()
                .unwrap()
                .contains("http_response_bytes")
        );
        assert_eq!(calls[2].outcome, HttpOutcome::OverQuota);
        assert!(
            calls[2]
                .detail
                .as_deref()
                .unwrap()
                .contains("http_requests")
        );

        // A request body over its quota is refused before it is sent.
        let post = HandoffPacket::new(
            "r",
            "s",
            json!({ "requests": [{ "url": format!("http://127.0.0.1:{port}/public/hello"),
            "method": "POST", "body": "y".repeat(2_000) }] }),
        );
        let budget = Budget {
            http_request_bytes: 1_000,
            ..Budget::default()
        };
        let out = rt.call(&agent, &post, &budget, &grants).await;
        let payload = out.result.unwrap().payload;
        let error = payload["results"][0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("quota"),
            "{payload} {:?}",
            out.receipt.http_calls
        );
        assert_eq!(out.receipt.http_calls[0].outcome, HttpOutcome::OverQuota);
        assert_eq!(out.receipt.http_calls[0].bytes_out, 0);
    }
}

#[tokio::test]
async fn a_server_that_hangs_is_cut_off_at_the_deadline() {
    let (seen, port) = server().await;
    let rt = runtime();
    let agent = rt.load(agents::FETCH).await.unwrap();
    let budget = Budget {
        timeout: Duration::from_millis(800),
        ..Budget::default()
    };
    let out = rt
        .call(
            &agent,
            &requests(&[format!("http://127.0.0.1:{port}/public/hang")], true),
            &budget,
            &http(&[format!("http://127.0.0.1:{port}")]),
        )
        .await;
    let e = out.result.unwrap_err();
    assert!(matches!(e, CallError::DeadlineExceeded { .. }), "{e}");
    assert_eq!(seen.paths(), ["/public/hang"]);
}

/// Requests no SDK would build, field by field: a query without a path
/// (once a host panic), and user info before the granted host (which would
/// have reached the server's `Host` header).
#[tokio::test]
async fn raw_requests_a_hostile_guest_builds_are_sent_safely_or_refused() {
    let (seen, port) = server().await;
    let rt = runtime();
    let agent = rt.load(agents::FETCH).await.unwrap();
    let raw = |authority: String, path: &str| json!({ "url": "http://raw", "raw": { "authority": authority, "path_with_query": path } });
    let packet = HandoffPacket::new(
        "r",
        "s",
        json!({ "requests": [
            raw(format!("127.0.0.1:{port}"), "?x"),
            raw(format!("evil.example:80@127.0.0.1:{port}"), "/public/hello"),
        ] }),
    );
    let out = rt
        .call(
            &agent,
            &packet,
            &Budget::default(),
            &http(&[format!("http://127.0.0.1:{port}")]),
        )
        .await;
    let payload = out.result.unwrap().payload;
    // `?x` is `/?x`: sent, answered (404 from the fallback), no panic.
    assert_eq!(payload["results"][0]["status"], 404, "{payload}");
    // User info is refused before anything is sent.
    let error = payload["results"][1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("UriInvalid") || error.contains("authority refused"),
        "{payload}"
    );
    assert_eq!(seen.paths(), ["/"]);
}

/// A guest that loops on refused requests is bounded by its fuel, and the
/// receipt by its record cap: the rest are counted, not kept.
#[tokio::test]
async fn refused_requests_past_the_record_cap_are_counted_not_kept() {
    let rt = runtime();
    let agent = rt.load(agents::FETCH).await.unwrap();
    let n = corral::http::MAX_HTTP_RECORDS + 44;
    let requests: Vec<Value> = (0..n)
        .map(|i| json!({ "url": format!("http://10.1.2.3/{}", "p".repeat(1000 + i)) }))
        .collect();
    let out = rt
        .call(
            &agent,
            &HandoffPacket::new("r", "s", json!({ "requests": requests })),
            &Budget {
                timeout: Duration::from_secs(30),
                ..Budget::default()
            },
            &http(&["https://api.example.com".to_string()]),
        )
        .await;
    assert!(out.result.is_ok(), "{:?}", out.result.err());
    let r = &out.receipt;
    assert_eq!(r.http_calls.len(), corral::http::MAX_HTTP_RECORDS);
    assert_eq!(r.http_calls_dropped, 44);
    // Paths are cut in records.
    assert!(
        r.http_calls[0].path.chars().count() <= 257,
        "{}",
        r.http_calls[0].path.len()
    );
}
