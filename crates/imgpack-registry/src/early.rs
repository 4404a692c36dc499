//! A push that starts before the image is finished (`imgpack build --push`):
//! the registry is contacted while the layers are written, and every layer
//! that grows past [`STREAM_FROM`] bytes goes up while it is still being
//! compressed, as one streamed PATCH with the digest on the closing PUT.
//!
//! The staged file is followed as it grows, so this works whatever
//! compressor writes it. Nothing is named here: manifests and tags go up only
//! once the image is complete ([`crate::push_image`]), and a layer whose early
//! upload failed goes up again from the staged blob with the usual retries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use imgpack_blob::{Digest, GrowingBlob, Growth, StagingWatcher};
use indicatif::ProgressBar;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::RegistryClient;

/// Blobs that stay below this size while being written go up with the rest
/// of the image: a streamed upload pays off only for large layers.
const STREAM_FROM: u64 = 4 << 20;

/// The early uploads under way: each ends with nothing (a small blob, left
/// for later), the digest the registry confirmed, or why it failed.
type Uploads = Arc<Mutex<Vec<JoinHandle<Option<Result<Digest, String>>>>>>;

/// The registry client being connected, shared by everything that needs it.
type Connecting = Shared<BoxFuture<'static, Result<Arc<RegistryClient>, String>>>;

/// What the early uploads came to.
#[derive(Default)]
pub(crate) struct EarlyUploads {
    /// Blobs the registry confirmed (201 with our digest) under the target repository.
    pub(crate) uploaded: HashSet<Digest>,
    /// Why uploads failed; those blobs go up again from the store.
    pub(crate) failures: Vec<String>,
}

/// A push under way before its image is complete.
pub(crate) struct EarlyPush {
    runtime: Option<Runtime>,
    client: Connecting,
    uploads: Uploads,
}

impl EarlyPush {
    /// Starts connecting with `connect` on a runtime of its own; blobs
    /// announced by `store` from now on are uploaded to `repository` as
    /// they are written.
    pub(crate) fn start(
        store: &imgpack_blob::BlobStore,
        repository: &str,
        connect: BoxFuture<'static, Result<RegistryClient>>,
    ) -> Result<Self> {
        let runtime = crate::runtime::runtime()?;
        let client: Connecting = connect
            .map(|connected| connected.map(Arc::new).map_err(|err| format!("{err:#}")))
            .boxed()
            .shared();
        // Contact starts now, not when the first layer is large enough.
        runtime.spawn(client.clone());
        let uploads = Arc::new(Mutex::new(Vec::new()));
        store.watch(Arc::new(Follower {
            runtime: runtime.handle().clone(),
            client: client.clone(),
            repository: repository.to_owned(),
            uploads: uploads.clone(),
        }));
        Ok(Self {
            runtime: Some(runtime),
            client,
            uploads,
        })
    }

    /// Runs `future` on this push's runtime.
    pub(crate) fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.block_on(future)
    }

    /// The connected client and what the early uploads achieved, once every
    /// blob is written (the image is complete).
    pub(crate) async fn collect(&self) -> Result<(Arc<RegistryClient>, EarlyUploads)> {
        let client = self.client.clone().await.map_err(|err| anyhow!(err))?;
        let handles = std::mem::take(&mut *self.uploads.lock().expect("not poisoned"));
        let mut early = EarlyUploads::default();
        for handle in handles {
            match handle.await {
                Ok(Some(Ok(digest))) => {
                    early.uploaded.insert(digest);
                }
                Ok(Some(Err(failure))) => early.failures.push(failure),
                Ok(None) => {}
                Err(err) => early.failures.push(format!("an upload task failed: {err}")),
            }
        }
        Ok((client, early))
    }
}

impl Drop for EarlyPush {
    fn drop(&mut self) {
        // A build that failed leaves uploads behind: they end with their writers, unwaited.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Watches the build's store for blobs to stream.
struct Follower {
    runtime: tokio::runtime::Handle,
    client: Connecting,
    repository: String,
    uploads: Uploads,
}

impl StagingWatcher for Follower {
    fn staging(&self, blob: GrowingBlob) {
        let task = follow(blob, self.client.clone(), self.repository.clone());
        let handle = self.runtime.spawn(task);
        self.uploads.lock().expect("not poisoned").push(handle);
    }
}

/// Streams `blob` once it is large enough; nothing for small blobs or a
/// writer that gave up, else the digest the registry confirmed or why not.
async fn follow(
    blob: GrowingBlob,
    client: Connecting,
    repository: String,
) -> Option<Result<Digest, String>> {
    let (blob, growth) = tokio::task::spawn_blocking(move || {
        let growth = blob.wait_for(STREAM_FROM);
        (blob, growth)
    })
    .await
    .ok()?;
    if !matches!(growth, Growth::Writing(_)) {
        return None;
    }
    // A client that could not connect is reported by the push itself.
    let client = client.await.ok()?;
    let uploaded = client
        .stream_upload(&repository, blob, &ProgressBar::hidden())
        .await;
    Some(
        uploaded
            .map(|blob| blob.digest)
            .map_err(|err| err.to_string()),
    )
}
