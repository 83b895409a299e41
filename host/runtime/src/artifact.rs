//! Artifacts (contract 0.2.0): large data passed by content-addressed reference; the reference form in packets, the store a call writes to and reads from (a run implements it), and what one call may read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest chunk written or read at once.
pub const MAX_CHUNK: usize = 1 << 20;

/// The most writers a call holds at once: each may hold a temporary file
/// open, so a guest cannot exhaust the host's file descriptors.
pub const MAX_OPEN_WRITERS: usize = 16;

/// The most artifacts one call may store: each costs the host a file, a
/// sync and a row, far more than the fuel the guest spends asking.
pub const MAX_ARTIFACTS_PER_CALL: u32 = 1_000;

/// Why a call without a store may not name or use an artifact.
pub(crate) const NO_STORE: &str = "this call has no artifact store: artifacts belong to a run (run the agent in a workflow with a state directory)";

/// A packet's reference to a stored artifact:
/// `{"$artifact": "sha256:<hex>", "media_type": "text/plain", "size": 123}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "corral artifact reference")]
pub struct Artifact {
    /// Content digest: `sha256:` and 64 lowercase hex digits.
    #[serde(rename = "$artifact")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Media type, such as `text/plain`.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// The JSON Schema of a reference, for agents' schemas to require one.
pub fn artifact_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Artifact)).expect("schemas serialize")
}

/// Whether `s` may be an artifact's media type: `type/subtype`, printable
/// ASCII without spaces, at most 255 bytes.
pub fn is_media_type(s: &str) -> bool {
    s.len() <= 255
        && s.split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Why an artifact could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Where a call's artifacts are kept: a run's store, under its quotas.
pub trait ArtifactStore: Send + Sync {
    /// Starts writing an artifact.
    fn begin(&self) -> Result<Box<dyn ArtifactSink>, ArtifactError>;
    /// The artifact `digest` as the run holds it, if it does.
    fn stat(&self, digest: &str) -> Result<Option<Artifact>, ArtifactError>;
    /// Up to `max` bytes of `digest` from `offset`.
    fn read(&self, digest: &str, offset: u64, max: usize) -> Result<Vec<u8>, ArtifactError>;
}

/// An artifact being written.
pub trait ArtifactSink: Send {
    fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError>;
    fn finish(self: Box<Self>, media_type: &str) -> Result<Artifact, ArtifactError>;
}

/// Every artifact reference in `v` (an object with a `$artifact` key), with
/// its JSON pointer; a malformed one gives why.
pub fn references(v: &Value) -> Vec<(String, Result<Artifact, String>)> {
    let mut found = Vec::new();
    walk(v, &mut String::new(), &mut found);
    found
}

fn walk(v: &Value, at: &mut String, found: &mut Vec<(String, Result<Artifact, String>)>) {
    match v {
        Value::Object(m) if m.contains_key("$artifact") => {
            let parsed = serde_json::from_value::<Artifact>(v.clone())
                .map_err(|e| format!("not an artifact reference ({e})"))
                .and_then(|a| {
                    if is_digest(&a.digest) {
                        Ok(a)
                    } else {
                        Err(format!(
                            "`{}` is not `sha256:` and 64 lowercase hex digits",
                            a.digest
                        ))
                    }
                });
            found.push((at.clone(), parsed));
        }
        Value::Object(m) => {
            for (k, x) in m {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(x, at, found);
                at.truncate(len);
            }
        }
        Value::Array(xs) => {
            for (i, x) in xs.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                walk(x, at, found);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether `s` is `sha256:` and 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One call's artifacts: its store, and what it may read (the artifacts
/// its input names and those it wrote).
pub(crate) struct CallArtifacts {
    pub store: Arc<dyn ArtifactStore>,
    readable: Mutex<HashMap<String, Artifact>>,
    /// Artifacts it stored so far.
    stored: std::sync::atomic::AtomicU32,
}

impl CallArtifacts {
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        Self {
            store,
            readable: Mutex::new(HashMap::new()),
            stored: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Claims one of the call's [`MAX_ARTIFACTS_PER_CALL`], or says why not.
    pub fn claim_store(&self) -> Result<(), ArtifactError> {
        use std::sync::atomic::Ordering;
        self.stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_ARTIFACTS_PER_CALL).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                ArtifactError::Quota(format!(
                    "this call has stored {MAX_ARTIFACTS_PER_CALL} artifacts, the most one call may; put more in each"
                ))
            })
    }

    pub fn allow(&self, a: Artifact) {
        self.readable.lock().unwrap().insert(a.digest.clone(), a);
    }

    /// The artifact `digest`, if this call may read it.
    pub fn readable(&self, digest: &str) -> Option<Artifact> {
        self.readable.lock().unwrap().get(digest).cloned()
    }

    /// Lets the call read the artifacts a delegate's answer names: the
    /// callee could read each (its output was checked), so the run holds
    /// it; the store says so again, which also covers a reused answer.
    pub fn allow_answer(&self, payload: &Value) {
        if let Ok(found) = check_references(payload, &|d| self.store.stat(d), "is not held") {
            for a in found {
                self.allow(a);
            }
        }
    }
}

/// Checks the references in a packet's payload against what is known of
/// each (`known`: the run's store, or what a call may read): each must be
/// well formed and agree with the stored artifact. Returns them, or the
/// pointer and the problem of the first that does not.
pub(crate) fn check_references(
    payload: &Value,
    known: &dyn Fn(&str) -> Result<Option<Artifact>, ArtifactError>,
    missing: &str,
) -> Result<Vec<Artifact>, (String, String)> {
    let mut ok = Vec::new();
    for (pointer, r) in references(payload) {
        let a = r.map_err(|why| (pointer.clone(), why))?;
        match known(&a.digest) {
            Ok(Some(stored)) if stored.size == a.size => ok.push(a),
            Ok(Some(stored)) => {
                return Err((
                    pointer,
                    format!(
                        "artifact {} is {} bytes, not the {} the reference says",
                        a.digest, stored.size, a.size
                    ),
                ));
            }
            Ok(None) => return Err((pointer, format!("artifact {} {missing}", a.digest))),
            Err(e) => return Err((pointer, e.to_string())),
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_with_their_pointers_and_checked() {
        let d = format!("sha256:{}", "a".repeat(64));
        let v = json!({ "doc": { "$artifact": d, "media_type": "text/plain", "size": 3 },
                        "list": [1, { "$artifact": "md5:x", "media_type": "t", "size": 1 }],
                        "a/b": { "$artifact": d } });
        let refs = references(&v);
        let pointers: Vec<&str> = refs.iter().map(|(p, _)| p.as_str()).collect();
        // In the payload's own key order.
        assert_eq!(pointers, ["/doc", "/list/1", "/a~1b"]);
        assert_eq!(refs[0].1.as_ref().unwrap().size, 3);
        assert!(refs[1].1.as_ref().unwrap_err().contains("64 lowercase hex"));
        let malformed = refs[2].1.as_ref().unwrap_err();
        assert!(
            malformed.contains("not an artifact reference"),
            "{malformed}"
        );
    }
}
