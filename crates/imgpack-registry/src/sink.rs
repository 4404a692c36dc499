//! The registry as an image [`Sink`]: `--push REF`.

use std::sync::Arc;

use anyhow::Result;
use imgpack_image::{Image, Sink};
use imgpack_sign::Signer;

use crate::runtime::block_on;
use crate::{connect, find_credentials, push_image, ImageRef, PushOptions, TransportOptions};

/// `--push REF`: the image goes to a registry.
pub struct RegistrySink {
    pub target: ImageRef,
    /// More tags for the same push (`--tag`).
    pub tags: Vec<String>,
    pub transport: TransportOptions,
    pub options: PushOptions,
    /// Signs every pushed manifest and the index (`--sign-key`).
    pub signer: Option<Arc<dyn Signer>>,
}

impl Sink for RegistrySink {
    fn describe(&self) -> String {
        format!("{}:{}", self.target.repository_ref(), self.target.tag())
    }

    fn write(&self, image: &Image) -> Result<()> {
        block_on(async {
            let credentials = find_credentials(&self.target.credential_keys());
            let client = connect(self.target.api_host(), &self.transport, credentials).await?;
            let signer = self.signer.as_deref();
            push_image(
                &client,
                &self.target,
                &self.tags,
                image,
                &self.options,
                signer,
            )
            .await?;
            Ok(())
        })
    }
}
