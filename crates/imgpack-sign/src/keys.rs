//! Keys: ECDSA P-256, as cosign makes them. A private key is read from
//! cosign's encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`, or the older
//! `ENCRYPTED COSIGN PRIVATE KEY`) or from a plain PKCS#8 PEM (`PRIVATE
//! KEY`); a public key is a PKIX PEM (`PUBLIC KEY`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature as EcdsaSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use zeroize::Zeroizing;

use crate::envelope;

/// The PEM label of the private keys cosign writes today.
pub const SIGSTORE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign wrote before 2.0, still read.
pub const COSIGN_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// Where the password of an encrypted key comes from, in order (the command
/// reads them once at start-up and takes them out of its environment).
pub const PASSWORD_ENVS: [&str; 2] = ["IMGPACK_SIGN_PASSWORD", "COSIGN_PASSWORD"];

/// A private key file read and checked but not decrypted: a build reads it
/// before compiling, so a missing or malformed key fails at once, and unlocks
/// it afterwards, so no decrypted key is in memory while a project's code runs.
pub struct LockedKey {
    path: std::path::PathBuf,
    text: Zeroizing<String>,
    encrypted: bool,
}

impl LockedKey {
    pub fn read(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(read_key_file(path)?);
        let cannot = || format!("cannot use the signing key {}", path.display());
        let block = pem::parse(text.trim_start())
            .context("it is not a PEM file")
            .with_context(cannot)?;
        let encrypted = match block.tag() {
            SIGSTORE_KEY_LABEL | COSIGN_KEY_LABEL => true,
            PKCS8_LABEL => false,
            // Any other label: the same message as a load would give.
            _ => {
                PrivateKey::from_pem(&text, || bail!("not encrypted")).with_context(cannot)?;
                false
            }
        };
        Ok(Self {
            path: path.to_owned(),
            text,
            encrypted,
        })
    }

    /// Whether unlocking needs a password.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key, decrypted with `password` when it is encrypted.
    pub fn unlock(
        &self,
        password: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<PrivateKey> {
        PrivateKey::from_pem(&self.text, password)
            .with_context(|| format!("cannot use the signing key {}", self.path.display()))
    }
}

/// A P-256 signing key.
pub struct PrivateKey {
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: only what identifies it.
        write!(f, "PrivateKey({})", self.public_key().fingerprint())
    }
}

impl PrivateKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        loop {
            let bytes = Zeroizing::new(envelope::random::<32>()?);
            // Fails only for the (2^-128 likely) values outside the curve order.
            if let Ok(key) = SigningKey::from_slice(bytes.as_slice()) {
                return Ok(Self { key });
            }
        }
    }

    /// Reads the key file at `path`; `password` is asked for only when the
    /// key is encrypted.
    pub fn load(path: &Path, password: impl FnOnce() -> Result<Zeroizing<String>>) -> Result<Self> {
        let text = read_key_file(path)?;
        Self::from_pem(&text, password)
            .with_context(|| format!("cannot use the signing key {}", path.display()))
    }

    /// Parses a private key PEM (see the module).
    pub fn from_pem(
        text: &str,
        password: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Self> {
        let block = pem::parse(text.trim_start()).context("it is not a PEM file")?;
        let der = match block.tag() {
            SIGSTORE_KEY_LABEL | COSIGN_KEY_LABEL => {
                let password = password()?;
                envelope::open(block.contents(), password.as_bytes())?
            }
            PKCS8_LABEL => Zeroizing::new(block.contents().to_vec()),
            "EC PRIVATE KEY" => bail!(
                "it is a SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY`, \
                 or make one with imgpack keygen"
            ),
            PUBLIC_KEY_LABEL => bail!("it is a public key: sign with the private key (.key)"),
            other => bail!(
                "its PEM label is '{}', not {SIGSTORE_KEY_LABEL}, {COSIGN_KEY_LABEL} or {PKCS8_LABEL}",
                envelope::printable(other)
            ),
        };
        let key = SigningKey::from_pkcs8_der(&der).map_err(|_| {
            anyhow::anyhow!(
                "it does not hold an ECDSA P-256 key (imgpack signs with P-256, cosign's default)"
            )
        })?;
        Ok(Self { key })
    }

    /// cosign's encrypted PEM of this key, sealed under `password`.
    pub fn to_encrypted_pem(&self, password: &str) -> Result<Zeroizing<String>> {
        let der = self.key.to_pkcs8_der().context("cannot encode the key")?;
        let body = envelope::seal(der.as_bytes(), password.as_bytes())?;
        let block = pem::Pem::new(SIGSTORE_KEY_LABEL, body);
        // LF line ends, as cosign writes its keys.
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        Ok(Zeroizing::new(pem::encode_config(&block, config)))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
        }
    }

    /// The ASN.1 DER ECDSA signature of SHA-256(`message`), as cosign stores it.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: EcdsaSignature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

/// A P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        Self::from_pem(&text)
            .with_context(|| format!("cannot use the public key {}", path.display()))
    }

    pub fn from_pem(text: &str) -> Result<Self> {
        let block = pem::parse(text.trim_start()).context("it is not a PEM file")?;
        match block.tag() {
            PUBLIC_KEY_LABEL => {}
            SIGSTORE_KEY_LABEL | COSIGN_KEY_LABEL | PKCS8_LABEL => {
                bail!("it is a private key: verify with the public key (.pub)")
            }
            other => bail!(
                "its PEM label is '{}', not {PUBLIC_KEY_LABEL}",
                envelope::printable(other)
            ),
        }
        let key = VerifyingKey::from_public_key_der(block.contents())
            .map_err(|_| anyhow::anyhow!("it does not hold an ECDSA P-256 public key"))?;
        Ok(Self { key })
    }

    /// PKIX PEM, as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .context("cannot encode the public key")
    }

    /// Whether `der_signature` is this key's ECDSA signature of SHA-256(`message`).
    pub fn verifies(&self, message: &[u8], der_signature: &[u8]) -> bool {
        EcdsaSignature::from_der(der_signature)
            .is_ok_and(|signature| self.key.verify(message, &signature).is_ok())
    }

    /// `sha256:` and the first 16 hex digits of the SHA-256 of its DER: a short name for messages.
    pub fn fingerprint(&self) -> String {
        match self.key.to_public_key_der() {
            Ok(der) => {
                let digest = imgpack_blob::Digest::of_bytes(der.as_bytes());
                format!("sha256:{}", &digest.hex()[..16])
            }
            Err(_) => "sha256:?".into(),
        }
    }
}

fn read_key_file(path: &Path) -> Result<String> {
    imgpack_blob::read_local_text(path, &imgpack_blob::local_file::KEY_FILE).map_err(
        |err| match err.io_error() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => anyhow::anyhow!(
                "cannot read the key file {}: it is not text",
                path.display()
            ),
            Some(io) => anyhow::anyhow!("cannot read the key file {}: {io}", path.display()),
            None => anyhow::anyhow!("{err}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_password() -> Result<Zeroizing<String>> {
        panic!("a plain key needs no password")
    }

    #[test]
    fn an_encrypted_key_round_trips_and_signs() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_encrypted_pem("pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(!pem.contains('\r'));
        let again = PrivateKey::from_pem(&pem, || Ok(Zeroizing::new("pw".into()))).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let signature = again.sign(b"payload");
        assert!(key.public_key().verifies(b"payload", &signature));
        assert!(!key.public_key().verifies(b"other", &signature));
        let other = PrivateKey::generate().unwrap();
        assert!(!other.public_key().verifies(b"payload", &signature));
    }

    #[test]
    fn the_older_cosign_label_and_plain_pkcs8_are_read() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_encrypted_pem("").unwrap();
        let old = pem.replace(SIGSTORE_KEY_LABEL, COSIGN_KEY_LABEL);
        let read = PrivateKey::from_pem(&old, || Ok(Zeroizing::new(String::new()))).unwrap();
        assert_eq!(read.public_key(), key.public_key());
        let plain = key.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let read = PrivateKey::from_pem(&plain, no_password).unwrap();
        assert_eq!(read.public_key(), key.public_key());
    }

    #[test]
    fn public_keys_round_trip_and_the_wrong_file_is_named() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.public_key().to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), key.public_key());
        let err = format!("{:#}", PrivateKey::from_pem(&pem, no_password).unwrap_err());
        assert!(err.contains("public key"), "{err}");
        let private = key.to_encrypted_pem("").unwrap();
        let err = format!("{:#}", PublicKey::from_pem(&private).unwrap_err());
        assert!(err.contains("private key"), "{err}");
        let err = format!("{:#}", PublicKey::from_pem("not a key").unwrap_err());
        assert!(err.contains("not a PEM"), "{err}");
    }

    #[test]
    fn an_encrypted_key_without_a_password_says_where_it_goes() {
        let pem = PrivateKey::generate()
            .unwrap()
            .to_encrypted_pem("x")
            .unwrap();
        let missing = || -> Result<Zeroizing<String>> { bail!("no password: COSIGN_PASSWORD") };
        let err = format!("{:#}", PrivateKey::from_pem(&pem, missing).unwrap_err());
        assert!(err.contains("COSIGN_PASSWORD"), "{err}");
        let wrong = || Ok(Zeroizing::new("y".to_owned()));
        let err = format!("{:#}", PrivateKey::from_pem(&pem, wrong).unwrap_err());
        assert!(
            err.contains("wrong password") && !err.contains('\n'),
            "{err}"
        );
    }
}
