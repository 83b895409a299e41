//! A run's artifacts as its calls see them: the run's store, under the run's `budget.artifact_bytes` and its tenant's storage ceiling.

use std::sync::Arc;

use corral_runtime::artifact::{Artifact, ArtifactError, ArtifactSink, ArtifactStore};
use corral_store::{
    ArtifactLimits, ArtifactRefusal, ArtifactRow, ArtifactUpload, Store, StoreError,
};

/// The artifacts of one run.
pub(super) struct RunArtifacts {
    pub(super) store: Arc<dyn Store>,
    pub(super) run_id: String,
    pub(super) limits: ArtifactLimits,
}

impl ArtifactStore for RunArtifacts {
    fn begin(&self) -> Result<Box<dyn ArtifactSink>, ArtifactError> {
        let used = self
            .store
            .artifacts(&self.run_id)
            .map_err(unavailable)?
            .iter()
            .map(|a| a.size)
            .sum();
        let upload = self.store.artifact_upload().map_err(unavailable)?;
        Ok(Box::new(Sink {
            upload,
            used,
            store: self.store.clone(),
            run_id: self.run_id.clone(),
            limits: self.limits,
        }))
    }

    fn stat(&self, digest: &str) -> Result<Option<Artifact>, ArtifactError> {
        let row = self
            .store
            .artifact(&self.run_id, digest)
            .map_err(unavailable)?;
        Ok(row.map(artifact))
    }

    fn read(&self, digest: &str, offset: u64, max: usize) -> Result<Vec<u8>, ArtifactError> {
        self.store
            .artifact_read(digest, offset, max)
            .map_err(unavailable)
    }
}

/// An artifact on its way into the run's store.
struct Sink {
    upload: ArtifactUpload,
    /// What the run's artifacts took when it began.
    used: u64,
    store: Arc<dyn Store>,
    run_id: String,
    limits: ArtifactLimits,
}

impl ArtifactSink for Sink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        // Refused as it streams, so that no writer fills the disk first.
        let size = self.upload.size() + chunk.len() as u64;
        if self.used.saturating_add(size) > self.limits.run {
            return Err(quota(&ArtifactRefusal::Run {
                used: self.used,
                size,
                limit: self.limits.run,
            }));
        }
        self.upload.write(chunk).map_err(unavailable)
    }

    fn finish(self: Box<Self>, media_type: &str) -> Result<Artifact, ArtifactError> {
        let Sink {
            upload,
            store,
            run_id,
            limits,
            ..
        } = *self;
        match store.artifact_finish(&run_id, upload, media_type, limits) {
            Ok(Ok(row)) => Ok(artifact(row)),
            Ok(Err(refusal)) => Err(quota(&refusal)),
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn artifact(row: ArtifactRow) -> Artifact {
    Artifact {
        digest: row.digest,
        media_type: row.media_type,
        size: row.size,
    }
}

fn quota(r: &ArtifactRefusal) -> ArtifactError {
    ArtifactError::Quota(match r {
        ArtifactRefusal::Run { used, size, limit } => format!(
            "storing {size} more bytes would take the run's artifacts past {limit} bytes ({used} stored); raise `budget.artifact_bytes`"
        ),
        ArtifactRefusal::Tenant { used, size, limit } => format!(
            "storing {size} more bytes would take the tenant's artifacts past its ceiling of {limit} bytes ({used} stored; `quota.artifact_bytes` in corral.toml)"
        ),
    })
}

fn unavailable(e: StoreError) -> ArtifactError {
    ArtifactError::Unavailable(format!("the artifact store failed: {e}"))
}
