//! Reading from registries: manifests and blobs of base images, each bounded
//! by a size limit or its descriptor's size, and checked against its digest
//! before anything is stored.

use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use imgpack_blob::{BlobInfo, BlobStore};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::client::{header, RegistryClient, Timing};
use crate::errors::{transport_error, RequestError};
use crate::limits::{read_limited, Progress, DOCUMENT_LIMIT};

/// The manifest types imgpack reads, most specific first.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

impl RegistryClient {
    /// A manifest or index by tag or digest (at most [`DOCUMENT_LIMIT`]
    /// bytes): its bytes and the Content-Type it was served with.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), RequestError> {
        let url = self.endpoint(&format!("v2/{repository}/manifests/{reference}"));
        let response = self
            .send(
                &[pull_scope(repository)],
                Method::GET,
                url,
                Timing::Short,
                |r| Ok(r.header(ACCEPT, MANIFEST_TYPES)),
            )
            .await?;
        // The caller's context names the manifest: a reference here would print it twice.
        if response.status() != StatusCode::OK {
            return Err(self.status_error(response, "fetching the manifest").await);
        }
        let content_type = header(&response, CONTENT_TYPE);
        let bytes = read_limited(response, DOCUMENT_LIMIT, "the manifest").await?;
        Ok((bytes, content_type))
    }

    /// Streams the blob `expected` names from `repository` into `store`:
    /// never more than its size, committed only when its digest matches, so
    /// a registry that sends something else leaves nothing in the store.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        expected: &BlobInfo,
        store: &BlobStore,
    ) -> Result<BlobInfo, RequestError> {
        let digest = &expected.digest;
        if store.contains(digest) {
            return Ok(expected.clone());
        }
        let url = self.endpoint(&format!("v2/{repository}/blobs/{digest}"));
        let response = self
            .send(
                &[pull_scope(repository)],
                Method::GET,
                url,
                Timing::Head,
                Ok,
            )
            .await?;
        let what = "fetching the blob";
        if response.status() != StatusCode::OK {
            return Err(self.status_error(response, what).await);
        }
        if response
            .content_length()
            .is_some_and(|len| len != expected.size)
        {
            return Err(self.wrong_size(expected.size));
        }
        let mut writer = store.writer().map_err(RequestError::local)?;
        let progress = Arc::new(Progress::new(expected.size));
        let copy = async {
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|err| transport_error(&self.registry, &err))?;
                if progress.moved() + chunk.len() as u64 > expected.size {
                    return Err(self.wrong_size(expected.size));
                }
                progress.add(chunk.len() as u64);
                writer.write_all(&chunk).map_err(|err| {
                    RequestError::fatal(format!("cannot write it to the cache: {err}"))
                })?;
            }
            Ok(())
        };
        tokio::select! {
            copied = copy => copied?,
            stall = progress.stalled() => return Err(stall.error(&self.registry, what)),
        }
        let received = writer.digest_so_far();
        if received.size < expected.size {
            return Err(RequestError::transient(format!(
                "registry {} cut the blob off after {} of {} bytes",
                self.registry, received.size, expected.size
            )));
        }
        if received.digest != *digest {
            // Dropped uncommitted: nothing is stored, under any name.
            return Err(RequestError::fatal(format!(
                "registry {} sent content hashing to {}: refused",
                self.registry, received.digest
            )));
        }
        writer.commit().map_err(RequestError::local)
    }

    fn wrong_size(&self, size: u64) -> RequestError {
        RequestError::fatal(format!(
            "registry {} sent another size than the {size} bytes the blob's descriptor gives: refused",
            self.registry
        ))
    }
}
