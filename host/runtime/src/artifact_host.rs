//! The host side of contract 0.2.0's `artifacts` interface: writers streaming chunks into the run's store, reads in chunks of what the call may read, each chunk bounded before it is copied out of the guest.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType, WasmList};

use crate::artifact::{
    Artifact, ArtifactError, ArtifactSink, CallArtifacts, MAX_CHUNK, MAX_OPEN_WRITERS,
    is_media_type,
};
use crate::sandbox::HostState;
use crate::wit::since_v0_2_0::corral::agent::artifacts as w;

/// A guest's `writer`: the sink until `finish`, or why it cannot write.
pub(crate) struct Writer {
    media_type: String,
    sink: Result<Box<dyn ArtifactSink>, ArtifactError>,
}

type Store<'a> = StoreContextMut<'a, HostState>;

/// Links `corral:agent/artifacts@0.2.0`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance("corral:agent/artifacts@0.2.0")?;
    i.resource(
        "writer",
        ResourceType::host::<Writer>(),
        |mut store, rep| {
            // Unfinished: the sink's temporary bytes go with it.
            let data = store.data_mut();
            data.table.delete(Resource::<Writer>::new_own(rep))?;
            data.artifact_writers -= 1;
            Ok(())
        },
    )?;
    i.func_wrap(
        "[constructor]writer",
        |mut store: Store<'_>, (media_type,): (String,)| {
            // Every writer is a table entry, and may hold a file: past the
            // bound the guest broke the contract, and the call ends.
            if store.data().artifact_writers >= MAX_OPEN_WRITERS {
                wasmtime::bail!(
                    "the agent opened more than {MAX_OPEN_WRITERS} artifact writers at once, the most a call may hold (finish or drop one first)"
                );
            }
            let sink = match ctx(&store) {
                Ok(a) if is_media_type(&media_type) => a.store.begin(),
                Ok(_) => Err(ArtifactError::Invalid(format!(
                    "`{}` is not a media type such as `text/plain`",
                    crate::display::guest(&media_type)
                ))),
                Err(e) => Err(e),
            };
            // Only a valid media type is kept (it is short).
            let media_type = if sink.is_ok() { media_type } else { String::new() };
            let writer = Writer { media_type, sink };
            let data = store.data_mut();
            let handle = data.table.push(writer)?;
            data.artifact_writers += 1;
            Ok((handle,))
        },
    )?;
    i.func_wrap(
        "[method]writer.write",
        |mut store: Store<'_>, (this, chunk): (Resource<Writer>, WasmList<u8>)| {
            if chunk.len() > MAX_CHUNK {
                let e = ArtifactError::Invalid(format!(
                    "a chunk of {} bytes is over the {MAX_CHUNK} a write takes",
                    chunk.len()
                ));
                return Ok((Err(lower(e)),));
            }
            // Copied out of guest memory only once its size is known.
            let bytes = chunk.as_le_slice(&store).to_vec();
            let writer = store.data_mut().table.get_mut(&this)?;
            let result = match &mut writer.sink {
                Ok(sink) => sink.write(&bytes),
                Err(e) => Err(e.clone()),
            };
            Ok((result.map_err(lower),))
        },
    )?;
    i.func_wrap(
        "[method]writer.finish",
        |mut store: Store<'_>, (this,): (Resource<Writer>,)| {
            let writer = store.data_mut().table.get_mut(&this)?;
            let spent = Err(ArtifactError::Invalid(
                "this writer is already finished".into(),
            ));
            let media_type = writer.media_type.clone();
            let sink = std::mem::replace(&mut writer.sink, spent);
            let result = sink.and_then(|sink| {
                ctx(&store)?.claim_store()?;
                sink.finish(&media_type)
            });
            if let (Ok(a), Ok(call)) = (&result, ctx(&store)) {
                call.allow(a.clone());
            }
            Ok((result.map(lift).map_err(lower),))
        },
    )?;
    i.func_wrap("stat", |store: Store<'_>, (digest,): (String,)| {
        let result = ctx(&store).and_then(|call| readable(&call, &digest));
        Ok((result.map(lift).map_err(lower),))
    })?;
    i.func_wrap(
        "read",
        |store: Store<'_>, (digest, offset, max): (String, u64, u32)| {
            let result = ctx(&store).and_then(|call| {
                let a = readable(&call, &digest)?;
                call.store
                    .read(&a.digest, offset, (max as usize).min(MAX_CHUNK))
            });
            Ok((result.map_err(lower),))
        },
    )?;
    Ok(())
}

/// The call's artifacts, or why it has none.
fn ctx(store: &Store<'_>) -> Result<Arc<CallArtifacts>, ArtifactError> {
    store
        .data()
        .artifacts
        .clone()
        .ok_or_else(|| ArtifactError::Invalid(crate::artifact::NO_STORE.into()))
}

/// The artifact `digest` if the call may read it.
fn readable(call: &CallArtifacts, digest: &str) -> Result<Artifact, ArtifactError> {
    call.readable(digest).ok_or_else(|| {
        ArtifactError::NotFound(format!(
            "this call may not read artifact `{}`: a call reads the artifacts its input names and those it wrote",
            crate::display::guest(digest)
        ))
    })
}

fn lift(a: Artifact) -> w::Artifact {
    w::Artifact {
        digest: a.digest,
        media_type: a.media_type,
        size: a.size,
    }
}

fn lower(e: ArtifactError) -> w::ArtifactError {
    match e {
        ArtifactError::NotFound(m) => w::ArtifactError::NotFound(m),
        ArtifactError::Quota(m) => w::ArtifactError::Quota(m),
        ArtifactError::Invalid(m) => w::ArtifactError::Invalid(m),
        ArtifactError::Unavailable(m) => w::ArtifactError::Unavailable(m),
    }
}
