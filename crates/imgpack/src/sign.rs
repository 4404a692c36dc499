//! `imgpack keygen`, `imgpack verify`, and the signer a push signs with
//! (`--sign-key`, IMGPACK_SIGN_KEY, `sign_key` in imgpack.toml; its password
//! from `--sign-password-file`, the environment or `sign_password_file`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use imgpack_attest::DsseSigner;
use imgpack_blob::Digest;
use imgpack_registry::{Attachment, Verification};
use imgpack_sign::{KeySigner, LockedKey, PrivateKey, PublicKey, Signature, Signer};
use zeroize::Zeroizing;

use crate::cli::{FileOnly, KeygenArgs, PushFlags, VerifyArgs, SIGN_KEY_ENV};
use crate::registry::transport;
use crate::secrets::read_password_file;

/// The signer for a push: `--sign-key`, else IMGPACK_SIGN_KEY, else the
/// config file's `sign_key`; None when none is set. The key file is read and
/// its password found now, so a missing key or password fails before anything
/// is built; the key is decrypted by [`PendingKey::unlock`], after the compile.
pub fn load_signer(flags: &PushFlags, from_file: &FileOnly) -> Result<Option<Arc<PendingKey>>> {
    let from_env = std::env::var_os(SIGN_KEY_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from);
    let Some(path) = flags
        .sign_key
        .clone()
        .or(from_env)
        .or(from_file.sign_key.clone())
    else {
        if flags.sign_password_file.is_some() {
            bail!(
                "--sign-password-file is the password of a signing key, but no key is given: add \
                 --sign-key (or set IMGPACK_SIGN_KEY)"
            );
        }
        return Ok(None);
    };
    let key = LockedKey::read(&path)?;
    let password = match key.is_encrypted() {
        true => Some(sign_password(flags, from_file)?),
        false => None,
    };
    Ok(Some(Arc::new(PendingKey {
        key,
        password: Mutex::new(password),
        unlocked: OnceLock::new(),
    })))
}

/// The password of the signing key: `--sign-password-file`, else
/// IMGPACK_SIGN_PASSWORD or COSIGN_PASSWORD, else `sign_password_file` in
/// imgpack.toml.
fn sign_password(flags: &PushFlags, from_file: &FileOnly) -> Result<Zeroizing<String>> {
    let secrets = crate::secrets::get();
    if let Some(path) = &flags.sign_password_file {
        return read_password_file(path, "--sign-password-file");
    }
    if secrets.has_sign_password() {
        return secrets.sign_password();
    }
    if let Some(path) = &from_file.sign_password_file {
        return read_password_file(path, "sign_password_file in imgpack.toml");
    }
    secrets.sign_password()
}

/// A signing key read but not yet decrypted (see [`load_signer`]).
pub struct PendingKey {
    key: LockedKey,
    /// Taken (and dropped) when the key is unlocked.
    password: Mutex<Option<Zeroizing<String>>>,
    unlocked: OnceLock<KeySigner>,
}

impl PendingKey {
    /// Decrypts the key (once): call it after the compile, before anything is
    /// signed, so a wrong password fails before anything is written or pushed.
    pub fn unlock(&self) -> Result<&KeySigner> {
        // Held while unlocking: two threads never decrypt at once.
        let mut password = self.password.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signer) = self.unlocked.get() {
            return Ok(signer);
        }
        let key = self.key.unlock(|| {
            password
                .take()
                .ok_or_else(|| anyhow::anyhow!("the key's password was already used"))
        })?;
        let signer = KeySigner::new(key, self.key.path().display().to_string());
        Ok(self.unlocked.get_or_init(|| signer))
    }
}

impl Signer for PendingKey {
    fn describe(&self) -> String {
        match self.unlocked.get() {
            Some(signer) => signer.describe(),
            None => format!("key {}", self.key.path().display()),
        }
    }

    fn sign(&self, payload: &[u8]) -> Result<Signature> {
        self.unlock()?.sign(payload)
    }

    fn public_key(&self) -> Option<PublicKey> {
        self.unlock().ok()?.public_key()
    }
}

/// The push's signer as the DSSE signer of the provenance envelope.
pub fn dsse_signer(signer: Arc<dyn Signer>) -> Box<dyn DsseSigner + Send + Sync> {
    Box::new(DsseKey(signer))
}

/// `imgpack push --sign-key` of a layout: a provenance the build wrote there
/// unsigned (it ran without the key, as in the two-step Job) is signed now;
/// the signed envelope and its artifact manifest are written beside it in the
/// layout, which must be writable for that, and pushed in its place.
pub fn sign_layout_provenance(
    image: &mut imgpack_image::Image,
    signer: Arc<dyn Signer>,
) -> Result<()> {
    use imgpack_attest::{Envelope, DSSE_MEDIA_TYPE, IN_TOTO_MEDIA_TYPE};
    let dsse = dsse_signer(signer);
    for referrer in &mut image.referrers {
        let Some(layer) = referrer.blobs.get(1) else {
            continue;
        };
        if referrer.artifact_type != IN_TOTO_MEDIA_TYPE || layer.media_type != DSSE_MEDIA_TYPE {
            continue;
        }
        let bytes = image.store.read_small(layer.digest())?;
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&bytes) else {
            continue; // not an envelope: pushed as it is, as before
        };
        if !envelope.signatures.is_empty() {
            continue;
        }
        let payload = envelope.payload_bytes().map_err(anyhow::Error::msg)?;
        let signed = imgpack_attest::envelope(&envelope.payload_type, &payload, Some(&*dsse))
            .map_err(|err| anyhow::anyhow!("cannot sign the provenance: {err}"))?;
        *referrer = imgpack_image::attach(
            &image.store,
            &referrer.subject,
            IN_TOTO_MEDIA_TYPE,
            DSSE_MEDIA_TYPE,
            &signed.to_json(),
            referrer.annotations.clone(),
        )
        .context(
            "cannot write the signed provenance into the layout: make it writable, or push \
             without --sign-key",
        )?;
    }
    Ok(())
}

/// A [`Signer`] signing DSSE PAE messages: the same ECDSA P-256 DER
/// signature cosign puts in an attestation's envelope.
struct DsseKey(Arc<dyn Signer>);

impl DsseSigner for DsseKey {
    /// Empty, as in the envelopes `cosign attest --key` writes: the key is
    /// known to whoever verifies.
    fn key_id(&self) -> String {
        String::new()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0
            .sign(message)
            .map(|signature| signature.signature)
            .map_err(|err| format!("{err:#}"))
    }
}

/// `imgpack keygen [--output-key-prefix PREFIX]`: PREFIX.key (cosign's
/// encrypted format, mode 0600) and PREFIX.pub, never over existing files.
pub fn run_keygen(args: KeygenArgs) -> Result<()> {
    let (private_path, public_path) = key_paths(&args.output_key_prefix);
    for path in [&private_path, &public_path] {
        if path.exists() {
            bail!(
                "{} exists: imgpack keygen never overwrites a key; move it away or give \
                 --output-key-prefix",
                path.display()
            );
        }
    }
    let password = crate::secrets::get().sign_password().map_err(|_| {
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

/// The default file name of a key pair, as cosign names it.
const DEFAULT_KEY_NAME: &str = "cosign";

/// PREFIX.key and PREFIX.pub, as cosign names them. A prefix that names a
/// directory only (`keys/`, `.`, `..`) means the default name in that
/// directory (`keys/cosign.key`), never the hidden `keys/.key`.
fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let text = prefix.as_os_str().to_string_lossy();
    let names_directory = text.is_empty()
        || text.ends_with('/')
        || matches!(
            prefix.components().next_back(),
            Some(std::path::Component::CurDir | std::path::Component::ParentDir)
        )
        || text.ends_with("/.");
    let stem = match names_directory {
        true => prefix.join(DEFAULT_KEY_NAME),
        false => prefix.to_owned(),
    };
    let with = |extension: &str| {
        let mut name = stem.clone().into_os_string();
        name.push(extension);
        PathBuf::from(name)
    };
    (with(".key"), with(".pub"))
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
    let transport = transport(&args.registry, args.retry, None, args.quiet);
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
    check_attachments(&args, &key, &verification)?;
    if !args.quiet {
        for manifest in &verification.manifests {
            let kind =
                manifest
                    .platform
                    .as_deref()
                    .unwrap_or(if verification.manifests.len() > 1 {
                        "index"
                    } else {
                        "manifest"
                    });
            println!("verified {repository}@{} ({kind})", manifest.digest);
        }
        for attachment in &verification.attachments {
            println!(
                "attached {} {repository}@{} to {}{}",
                attachment.artifact_type,
                attachment.manifest,
                attachment.subject,
                attachment
                    .platform
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

const SBOM_TYPES: [&str; 2] = ["application/spdx+json", "application/vnd.cyclonedx+json"];

/// `--sbom`, `--provenance`: every platform manifest has the attachment,
/// naming it as its subject; a provenance envelope is signed with `key`
/// and its statement is about that manifest.
fn check_attachments(
    args: &VerifyArgs,
    key: &PublicKey,
    verification: &Verification,
) -> Result<()> {
    let platforms: Vec<(&Digest, Option<&str>)> = match verification.manifests.len() {
        1 => vec![(&verification.root, None)],
        _ => verification.manifests[1..]
            .iter()
            .map(|m| (&m.digest, m.platform.as_deref()))
            .collect(),
    };
    for (digest, platform) in platforms {
        let name = match platform {
            Some(platform) => format!("its {platform} manifest {digest}"),
            None => format!("its manifest {digest}"),
        };
        let of_subject = |types: &[&str]| -> Vec<&Attachment> {
            verification
                .attachments
                .iter()
                .filter(|a| &a.subject == digest && a.names_subject)
                .filter(|a| types.contains(&a.artifact_type.as_str()))
                .collect()
        };
        if args.sbom && of_subject(&SBOM_TYPES).is_empty() {
            bail!(
                "{}: {name} has no SBOM attached (push it again without --sbom none)",
                args.reference
            );
        }
        if args.provenance {
            let provenances = of_subject(&[imgpack_attest::IN_TOTO_MEDIA_TYPE]);
            if provenances.is_empty() {
                bail!(
                    "{}: {name} has no provenance attached (push it again without --provenance=false)",
                    args.reference
                );
            }
            let problems: Vec<String> = provenances
                .iter()
                .filter_map(|a| provenance_problem(a, key, digest).err())
                .collect();
            if problems.len() == provenances.len() {
                bail!(
                    "{}: the provenance of {name} {}: not verified with {}",
                    args.reference,
                    problems[0],
                    args.key.display()
                );
            }
        }
    }
    Ok(())
}

/// Why a provenance attachment does not count, if it does not.
fn provenance_problem(
    attachment: &Attachment,
    key: &PublicKey,
    subject: &Digest,
) -> Result<(), String> {
    let bytes = attachment.document.as_deref().ok_or("was not read")?;
    let envelope: imgpack_attest::Envelope =
        serde_json::from_slice(bytes).map_err(|_| "is not a DSSE envelope".to_owned())?;
    if envelope.payload_type != imgpack_attest::IN_TOTO_MEDIA_TYPE {
        return Err(format!(
            "has payload type {}, not in-toto",
            envelope.payload_type.escape_debug()
        ));
    }
    let message = envelope.signed_message()?;
    let signatures = envelope.signature_bytes()?;
    if signatures.is_empty() {
        return Err("is not signed (push it with --sign-key)".into());
    }
    if !signatures.iter().any(|sig| key.verifies(&message, sig)) {
        return Err("has no signature made with this key".into());
    }
    let statement: serde_json::Value = serde_json::from_slice(&envelope.payload_bytes()?)
        .map_err(|_| "holds a statement that is not JSON".to_owned())?;
    let about_subject = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(subject.hex()));
    match about_subject {
        true => Ok(()),
        false => Err("is a statement about another manifest".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_naming_a_directory_gets_the_default_name_in_it() {
        let paths = |prefix: &str| {
            let (key, public) = key_paths(Path::new(prefix));
            (key.display().to_string(), public.display().to_string())
        };
        assert_eq!(paths("cosign"), ("cosign.key".into(), "cosign.pub".into()));
        assert_eq!(
            paths("keys/ci"),
            ("keys/ci.key".into(), "keys/ci.pub".into())
        );
        assert_eq!(paths("v1.2"), ("v1.2.key".into(), "v1.2.pub".into()));
        for (prefix, key) in [
            ("keys/", "keys/cosign.key"),
            ("keys/.", "keys/./cosign.key"),
            (".", "./cosign.key"),
            ("..", "../cosign.key"),
            ("/tmp/keys//", "/tmp/keys//cosign.key"),
        ] {
            assert_eq!(paths(prefix).0, key, "{prefix}");
        }
    }
}
