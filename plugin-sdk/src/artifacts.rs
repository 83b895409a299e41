//! Artifacts: large data passed between agents by content-addressed reference, written and read in chunks so that no more than a chunk sits in memory.
//!
//! ```ignore
//! use corral_sdk::artifacts::{self, Artifact};
//! use std::io::{Read, Write};
//!
//! // Write: stream any number of bytes, get a reference for the output.
//! let mut w = artifacts::Writer::new("text/plain");
//! w.write_all(b"a large document...")?;
//! let doc: Artifact = w.finish()?;
//!
//! // Read: a reference in the input (a field of type `Artifact`).
//! let mut text = String::new();
//! artifacts::open(&doc).read_to_string(&mut text)?;
//! ```
//!
//! A call may read the artifacts its input names and those it wrote.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bindings::corral::agent::artifacts as w;

pub use w::ArtifactError;

/// The largest chunk the host takes or gives at once.
pub const CHUNK: usize = 1 << 20;

/// A reference to a stored artifact, as it travels in a packet:
/// `{"$artifact": "sha256:…", "media_type": "text/plain", "size": 123}`.
/// Use it as a field of an input or output type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
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

impl From<w::Artifact> for Artifact {
    fn from(a: w::Artifact) -> Self {
        Artifact {
            digest: a.digest,
            media_type: a.media_type,
            size: a.size,
        }
    }
}

/// Stores `bytes` as an artifact of `media_type`.
pub fn put(bytes: &[u8], media_type: &str) -> Result<Artifact, ArtifactError> {
    let mut writer = Writer::new(media_type);
    writer.put(bytes)?;
    writer.finish()
}

/// Reads a whole artifact into memory; for a large one, read it with [`open`].
pub fn get(artifact: &Artifact) -> Result<Vec<u8>, ArtifactError> {
    let mut out = Vec::with_capacity(artifact.size.min(64 << 20) as usize);
    let mut reader = open(artifact);
    while let Some(chunk) = reader.next_chunk()? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An artifact being written, in chunks of at most [`CHUNK`] bytes.
pub struct Writer(w::Writer);

impl Writer {
    pub fn new(media_type: &str) -> Self {
        Writer(w::Writer::new(media_type))
    }

    /// Appends `bytes`, in as many chunks as it takes.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        for chunk in bytes.chunks(CHUNK) {
            self.0.write(chunk)?;
        }
        Ok(())
    }

    /// Stores what was written and gives its reference.
    pub fn finish(self) -> Result<Artifact, ArtifactError> {
        self.0.finish().map(Artifact::from)
    }
}

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK);
        self.0.write(&buf[..n]).map_err(io_error)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `artifact` in chunks ([`Reader::next_chunk`], or `std::io::Read`).
pub fn open(artifact: &Artifact) -> Reader {
    Reader {
        digest: artifact.digest.clone(),
        offset: 0,
    }
}

/// An artifact being read.
pub struct Reader {
    digest: String,
    offset: u64,
}

impl Reader {
    /// The next chunk (at most [`CHUNK`] bytes), or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ArtifactError> {
        let chunk = w::read(&self.digest, self.offset, CHUNK as u32)?;
        if chunk.is_empty() {
            return Ok(None);
        }
        self.offset += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

impl std::io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = buf.len().min(CHUNK) as u32;
        let chunk = w::read(&self.digest, self.offset, max).map_err(io_error)?;
        buf[..chunk.len()].copy_from_slice(&chunk);
        self.offset += chunk.len() as u64;
        Ok(chunk.len())
    }
}

fn io_error(e: ArtifactError) -> std::io::Error {
    std::io::Error::other(format!("{e:?}"))
}

impl From<ArtifactError> for crate::AgentError {
    /// Quota and bad requests are permanent; a failing store is transient.
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Unavailable(m) => crate::AgentError::transient(m),
            ArtifactError::NotFound(m) | ArtifactError::Quota(m) | ArtifactError::Invalid(m) => {
                crate::AgentError::permanent(m)
            }
        }
    }
}
