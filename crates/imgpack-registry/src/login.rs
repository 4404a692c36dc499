//! `imgpack login`: checks credentials against the registry, then stores
//! them where `docker login` would.

use std::time::Duration;

use anyhow::Result;

use crate::credentials::{store_login, StoredIn};
use crate::runtime::block_on;
use crate::{connect, hub, Credential, Credentials, TransportOptions};

/// A login is interactive: it gives up sooner than a push.
const LOGIN_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Logs in to `server` (HOST[:PORT], or any of Docker Hub's names) as
/// `username` with `password` read from standard input; returns where the
/// credentials were stored.
pub fn login(
    server: &str,
    username: &str,
    password: &str,
    transport: &TransportOptions,
) -> Result<StoredIn> {
    let credentials = Credentials {
        credential: Some(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }),
        source: Some("standard input (imgpack login --password-stdin)".to_owned()),
        tried: Vec::new(),
    };
    let mut transport = transport.clone();
    transport.retry.max_elapsed = transport.retry.max_elapsed.min(LOGIN_RETRY_BUDGET);
    block_on(async {
        let client = connect(hub::api_host(server), &transport, credentials).await?;
        client
            .check_login()
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))
    })?;
    store_login(hub::login_key(server), username, password)
}
