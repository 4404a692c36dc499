//! Reading from registries: manifests and blobs of base images, fetched once
//! into a local cache by digest, so a rebuild works offline.

use futures_util::StreamExt;
use imgpack_blob::{BlobInfo, BlobStore, Digest};
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use std::io::Write;

use crate::client::{RegistryClient, RequestError};

/// The manifest types imgpack reads, most specific first.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

impl RegistryClient {
    /// A manifest or index by tag or digest: its bytes and media type.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String), RequestError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = self
            .send(&[pull_scope(repository)], |http| {
                Ok(http.get(&url).header(ACCEPT, MANIFEST_TYPES))
            })
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .status_error(
                    response,
                    &format!("fetching manifest {repository}:{reference}"),
                )
                .await);
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| crate::client::transport_error(self.registry(), &err))?;
        Ok((bytes.to_vec(), media_type))
    }

    /// Streams blob `digest` of `repository` into `store`, checking its digest;
    /// a blob already in the store is not fetched again.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        digest: &Digest,
        store: &BlobStore,
    ) -> Result<BlobInfo, RequestError> {
        if store.contains(digest) {
            let size = std::fs::metadata(store.path(digest))
                .map(|m| m.len())
                .unwrap_or(0);
            return Ok(BlobInfo {
                digest: digest.clone(),
                size,
            });
        }
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let response = self
            .send(&[pull_scope(repository)], |http| Ok(http.get(&url)))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .status_error(response, &format!("fetching blob {digest}"))
                .await);
        }
        let local = |err: anyhow::Error| RequestError {
            message: format!("{err:#}"),
            transient: false,
            retry_after: None,
        };
        let mut writer = store.writer().map_err(local)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|err| crate::client::transport_error(self.registry(), &err))?;
            writer.write_all(&chunk).map_err(|err| {
                local(anyhow::anyhow!(
                    "cannot write blob {digest} to the cache: {err}"
                ))
            })?;
        }
        let info = writer.commit().map_err(local)?;
        if info.digest != *digest {
            // The file is stored under what it really is; nothing claims it is `digest`.
            return Err(RequestError {
                message: format!(
                    "registry {} sent {} for blob {digest}",
                    self.registry(),
                    info.digest
                ),
                transient: true,
                retry_after: None,
            });
        }
        Ok(info)
    }
}
