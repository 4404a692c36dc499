//! The registry as an image [`Sink`]: `--push REF`.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures_util::FutureExt;
use imgpack_blob::BlobStore;
use imgpack_image::{Image, Sink};
use imgpack_sign::Signer;

use crate::early::EarlyPush;
use crate::push::push_after;
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
    /// Started by [`Sink::prepare`]: contact and uploads under way while the layers are written.
    early: Mutex<Option<EarlyPush>>,
}

impl RegistrySink {
    pub fn new(
        target: ImageRef,
        tags: Vec<String>,
        transport: TransportOptions,
        options: PushOptions,
        signer: Option<Arc<dyn Signer>>,
    ) -> Self {
        Self {
            target,
            tags,
            transport,
            options,
            signer,
            early: Mutex::new(None),
        }
    }
}

impl Sink for RegistrySink {
    fn describe(&self) -> String {
        format!("{}:{}", self.target.repository_ref(), self.target.tag())
    }

    /// Connects now and uploads large layers while they are compressed.
    fn prepare(&self, store: &BlobStore) -> Result<()> {
        let (host, transport) = (self.target.api_host().to_owned(), self.transport.clone());
        let keys = self.target.credential_keys();
        let connect = async move { connect(&host, &transport, find_credentials(&keys)).await };
        let early = EarlyPush::start(store, self.target.repository(), connect.boxed())?;
        *self.early.lock().expect("not poisoned") = Some(early);
        Ok(())
    }

    fn write(&self, image: &Image) -> Result<()> {
        let early = self.early.lock().expect("not poisoned").take();
        let signer = self.signer.as_deref();
        let (target, tags, options) = (&self.target, &self.tags, &self.options);
        match early {
            Some(early) => early.block_on(async {
                let (client, uploads) = early.collect().await?;
                push_after(&client, target, tags, image, options, signer, &uploads).await
            }),
            None => block_on(async {
                let credentials = find_credentials(&target.credential_keys());
                let client = connect(target.api_host(), &self.transport, credentials).await?;
                push_image(&client, target, tags, image, options, signer).await
            }),
        }?;
        Ok(())
    }
}
