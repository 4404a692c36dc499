//! `imgpack keygen`, `imgpack verify`, and the signer a push signs with
//! (`--sign-key`, IMGPACK_SIGN_KEY, `sign_key` in imgpack.toml).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use imgpack_sign::{password_from_env, KeySigner, PrivateKey, PublicKey, Signer};

use crate::cli::{KeygenArgs, VerifyArgs, SIGN_KEY_ENV};
use crate::registry::transport;

/// The signer for a push: `--sign-key`, else IMGPACK_SIGN_KEY, else the
/// config file's `sign_key`; None when none is set. The key is unlocked now,
/// so a wrong password fails before anything is built or pushed.
pub fn load_signer(flag: Option<&Path>, from_file: Option<&Path>) -> Result<Option<Arc<dyn Signer>>> {
    let from_env = std::env::var_os(SIGN_KEY_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from);
    let Some(path) = flag.map(Path::to_owned).or(from_env).or(from_file.map(Path::to_owned)) else {
        return Ok(None);
    };
    let key = PrivateKey::load(&path, password_from_env)?;
    Ok(Some(Arc::new(KeySigner::new(key, path.display().to_string()))))
}

/// `imgpack keygen [--output-key-prefix PREFIX]`: PREFIX.key (cosign's
/// encrypted format, mode 0600) and PREFIX.pub, never over existing files.
pub fn run_keygen(args: KeygenArgs) -> Result<()> {
    let prefix = args.output_key_prefix.display().to_string();
    let private_path = PathBuf::from(format!("{prefix}.key"));
    let public_path = PathBuf::from(format!("{prefix}.pub"));
    for path in [&private_path, &public_path] {
        if path.exists() {
            bail!(
                "{} exists: imgpack keygen never overwrites a key; move it away or give \
                 --output-key-prefix",
                path.display()
            );
        }
    }
    let password = password_from_env().map_err(|_| {
        anyhow::anyhow!(
            "no password for the new key: set COSIGN_PASSWORD (or IMGPACK_SIGN_PASSWORD) to it, \
             or set it empty for a key without one"
        )
    })?;
    let key = PrivateKey::generate()?;
    let private_pem = key.to_encrypted_pem(&password)?;
    let public_pem = key.public_key().to_pem()?;
    write_new(&private_path, private_pem.as_bytes(), 0o600)?;
    if let Err(err) = write_new(&public_path, public_pem.as_bytes(), 0o644) {
        // Nothing half-done: a private key without its public key is removed again.
        let _ = std::fs::remove_file(&private_path);
        return Err(err);
    }
    eprintln!(
        "imgpack: wrote {} (private, encrypted) and {}; sign with --sign-key {}, verify with \
         imgpack verify REF --key {}",
        private_path.display(),
        public_path.display(),
        private_path.display(),
        public_path.display()
    );
    Ok(())
}

/// Creates `path` (it must not exist) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let cannot = || format!("cannot write {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(cannot)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(cannot)
}

/// `imgpack verify REF --key PUB`: every manifest must carry a signature by
/// the key for the repository; the first that does not ends it with one line.
pub fn run_verify(args: VerifyArgs) -> Result<()> {
    let key = PublicKey::load(&args.key)?;
    let transport = transport(&args.registry, None, true);
    let verification = imgpack_registry::verify_signatures(&args.reference, &key, &transport)?;
    let repository = &verification.repository;
    let failed: Vec<_> = verification
        .manifests
        .iter()
        .filter(|m| m.outcome.is_err())
        .collect();
    if let Some(first) = failed.first() {
        let Err(refusal) = &first.outcome else {
            unreachable!("filtered")
        };
        let what = match &first.platform {
            Some(platform) => format!("its {platform} manifest {}", first.digest),
            None => format!("it resolves to {}, which", first.digest),
        };
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more manifest(s) fail)", n - 1),
        };
        bail!(
            "{}: {what} {refusal}{more}: not verified with {}",
            args.reference,
            args.key.display()
        );
    }
    if !args.quiet {
        for manifest in &verification.manifests {
            let kind = manifest.platform.as_deref().unwrap_or(if verification.manifests.len() > 1 {
                "index"
            } else {
                "manifest"
            });
            println!("verified {repository}@{} ({kind})", manifest.digest);
        }
    }
    Ok(())
}
