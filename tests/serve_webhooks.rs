//! Webhooks from a real `corral serve` to a receiver the test runs: signed the Standard Webhooks way, retried when the receiver fails, given up and recorded when it is dead, and never in a run's way.

#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use serde_json::Value;

use serve::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// `/slow` answers only once this is set.
    release: Arc<tokio::sync::Notify>,
}

impl Receiver {
    fn hits(&self, path: &str) -> Vec<Hit> {
        let hits = self.hits.lock().unwrap();
        hits.iter().filter(|h| h.path == path).cloned().collect()
    }

    /// Waits (bounded) until `path` got `n` requests.
    fn wait(&self, path: &str, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hits = self.hits(path);
            if hits.len() >= n {
                return hits;
            }
            assert!(Instant::now() < deadline, "{path} got {hits:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn hook(
    State(r): State<Receiver>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let hit = Hit {
        path: path.clone(),
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
    };
    let seen = {
        let mut hits = r.hits.lock().unwrap();
        hits.push(hit);
        hits.iter().filter(|h| h.path == path).count()
    };
    match path.as_str() {
        // Fails twice, then takes it.
        "flaky" if seen <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
        "slow" => {
            r.release.notified().await;
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::NO_CONTENT,
    }
}

/// Starts the receiver on loopback; returns it and its base URL.
fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(hook))
        .with_state(r.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (r, base)
}

/// A port nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dead", l.local_addr().unwrap());
    drop(l);
    url
}

fn verify(hit: &Hit) {
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", hit.id, hit.timestamp, hit.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(hit.signature, expected, "signature of {hit:?}");
    let ts: u64 = hit.timestamp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) < 300, "timestamp {ts} vs now {now}");
    assert!(hit.id.starts_with("msg_"), "{hit:?}");
}

fn body(hit: &Hit) -> Value {
    serde_json::from_str(&hit.body).unwrap()
}

fn config(base: &str, dead: &str) -> String {
    format!(
        r#"
[server]
webhook_timeout = "30s"
webhook_attempts = 3
webhook_backoff = "50ms"

[[tenant]]
id = "acme"
tokens = ["{acme}"]
[[tenant.webhooks]]
url = "{base}/all"
secret = "{SECRET}"
[[tenant.webhooks]]
url = "{base}/flaky"
secret = "{SECRET}"
events = ["run.completed"]
[[tenant.webhooks]]
url = "{base}/slow"
secret = "{SECRET}"
events = ["run.started"]
[[tenant.webhooks]]
url = "{dead}"
secret = "{SECRET}"
events = ["run.completed"]

[[tenant]]
id = "globex"
tokens = ["{globex}"]
[[tenant.webhooks]]
url = "{base}/globex"
secret = "{SECRET}"
"#,
        acme = hash(ACME),
        globex = hash(GLOBEX),
    )
}

#[test]
fn run_events_reach_each_endpoint_signed_retried_and_recorded_without_slowing_the_run() {
    let (rx, base) = receiver();
    let s = Serve::start_with(&config(&base, &dead_url()));
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let run = s.submit(ACME, &echo_workflow("echo"));
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();

    // `/slow` holds the `run.started` delivery until released: the run
    // completes all the same.
    let done = s.wait_run(ACME, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        rx.hits("slow").len(),
        1,
        "the slow endpoint is still answering"
    );
    rx.release.notify_one();

    // Every event, in order, each signed; the payload names the run.
    let all = rx.wait("all", 2);
    let kinds: Vec<Value> = all.iter().map(|h| body(h)["type"].clone()).collect();
    assert_eq!(kinds, ["run.started", "run.completed"]);
    for h in &all {
        verify(h);
        assert_eq!(body(h)["data"]["run"], id.as_str());
    }
    assert_eq!(body(&all[1])["data"]["status"], "completed");

    // The flaky endpoint failed twice and got the third try, with the same
    // message id every time.
    let flaky = rx.wait("flaky", 3);
    assert!(flaky.iter().all(|h| h.id == flaky[0].id), "{flaky:?}");
    flaky.iter().for_each(verify);

    // Every attempt is recorded; the dead endpoint is given up after its
    // three attempts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let d = s.get(&format!("/v1/runs/{id}/deliveries"), ACME);
        assert_eq!(d.status, 200, "{}", d.body);
        let settled = d
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] != "pending");
        if settled {
            break d.body;
        }
        assert!(Instant::now() < deadline, "{}", d.body);
        std::thread::sleep(Duration::from_millis(50));
    };
    let by_url = |suffix: &str| -> Vec<&Value> {
        records
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["url"].as_str().unwrap().ends_with(suffix))
            .collect()
    };
    let flaky_rec = by_url("/flaky");
    assert_eq!(flaky_rec.len(), 1, "{records}");
    assert_eq!(flaky_rec[0]["state"], "delivered");
    let statuses: Vec<Value> = flaky_rec[0]["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].clone())
        .collect();
    assert_eq!(statuses, [500, 500, 204], "{records}");
    let dead = by_url("/dead");
    assert_eq!(dead[0]["state"], "failed", "{records}");
    assert_eq!(dead[0]["tries"].as_array().unwrap().len(), 3, "{records}");
    assert!(dead[0]["tries"][0]["error"].as_str().is_some(), "{records}");
    assert_eq!(by_url("/slow")[0]["state"], "delivered", "{records}");

    // Another tenant's endpoint hears nothing of it, and cannot read it.
    assert!(rx.hits("globex").is_empty());
    assert_eq!(
        s.get(&format!("/v1/runs/{id}/deliveries"), GLOBEX).status,
        404
    );

    s.wait_metric(r#"corral_webhook_deliveries_total{tenant="acme",outcome="failed"} 1"#);
    s.wait_metric(r#"corral_webhook_deliveries_total{tenant="acme",outcome="retrying"} 4"#);
}

/// The deliveries of run `id` once `done` says they are far enough along (bounded).
fn deliveries_until(s: &Serve, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = s.get(&format!("/v1/runs/{id}/deliveries"), ACME);
        assert_eq!(d.status, 200, "{}", d.body);
        if done(&d.body) {
            return d.body;
        }
        assert!(Instant::now() < deadline, "{}", d.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_queued_delivery_survives_a_killed_server_and_is_retried_by_the_next() {
    let (rx, base) = receiver();
    let config = format!(
        "[server]\nwebhook_timeout = \"5s\"\nwebhook_backoff = \"1s\"\n\n[[tenant]]\nid = \"acme\"\ntokens = [\"{}\"]\n[[tenant.webhooks]]\nurl = \"{base}/flaky\"\nsecret = \"{SECRET}\"\nevents = [\"run.completed\"]\n",
        hash(ACME)
    );
    let mut s = Serve::start_with(&config);
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let id = s.submit(ACME, &echo_workflow("echo")).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.wait_run(ACME, &id)["status"], "completed");
    // The first attempt failed and is recorded; the next is due in a second.
    deliveries_until(&s, &id, |d| {
        d[0]["tries"].as_array().is_some_and(|t| t.len() == 1)
    });
    s.kill9();
    s.spawn();
    let d = deliveries_until(&s, &id, |d| d[0]["state"] == "delivered");
    let tries = d[0]["tries"].as_array().unwrap();
    assert!(tries.len() >= 2, "{d}");
    assert_eq!(tries.last().unwrap()["status"], 204, "{d}");
    let hits = rx.hits("flaky");
    assert!(
        hits.iter().all(|h| h.id == hits[0].id),
        "one message id: {hits:?}"
    );
}

#[test]
fn corral_token_prints_fresh_webhook_secrets() {
    let secret = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["token", "--webhook-secret"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (secret(), secret());
    assert_ne!(a, b);
    let key = STANDARD.decode(a.strip_prefix("whsec_").unwrap()).unwrap();
    assert_eq!(key.len(), 32);
}
