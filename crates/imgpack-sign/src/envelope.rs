//! cosign's encrypted private key: the body of an `ENCRYPTED SIGSTORE
//! PRIVATE KEY` PEM is JSON naming a scrypt key derivation and a NaCl
//! secretbox (XSalsa20-Poly1305) that seals the PKCS#8 DER of the key. The
//! format comes from go-tuf's `encrypted` package, which cosign uses.

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// cosign's parameters for new keys: N = 2^15, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Seals `plaintext` under `password` with fresh salt and nonce: the JSON body.
pub(crate) fn seal(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>> {
    let salt = random::<SALT_LEN>()?;
    let nonce = random::<NONCE_LEN>()?;
    let key = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
    let ciphertext = XSalsa20Poly1305::new(key.as_slice().into())
        .encrypt(nonce.as_slice().into(), plaintext)
        .map_err(|_| anyhow::anyhow!("cannot encrypt the key"))?;
    let envelope = Envelope {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams {
                n: 1 << SCRYPT_LOG_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: BASE64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: BASE64.encode(nonce),
        },
        ciphertext: BASE64.encode(ciphertext),
    };
    Ok(serde_json::to_vec(&envelope)?)
}

/// Opens a JSON body sealed by [`seal`] (or by cosign); a wrong password is
/// an error that says so.
pub(crate) fn open(body: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let envelope: Envelope =
        serde_json::from_slice(body).context("its body is not cosign's key JSON")?;
    if envelope.kdf.name != "scrypt" || envelope.cipher.name != "nacl/secretbox" {
        bail!(
            "it uses {} with {}; imgpack reads cosign's scrypt with nacl/secretbox",
            printable(&envelope.kdf.name),
            printable(&envelope.cipher.name)
        );
    }
    let params = &envelope.kdf.params;
    // Only cosign's two settings: a file must not make imgpack spend minutes or gigabytes.
    let log_n = match (params.n, params.r, params.p) {
        (32768, 8, 1) => 15,
        (65536, 8, 1) => 16,
        _ => bail!(
            "its scrypt parameters (N={}, r={}, p={}) are not cosign's (N=32768 or 65536, r=8, p=1)",
            params.n,
            params.r,
            params.p
        ),
    };
    let salt = decode(&envelope.kdf.salt, "salt")?;
    let nonce = decode(&envelope.cipher.nonce, "nonce")?;
    let ciphertext = decode(&envelope.ciphertext, "ciphertext")?;
    if nonce.len() != NONCE_LEN || salt.is_empty() || salt.len() > 1024 {
        bail!("its nonce or salt has the wrong length");
    }
    let key = derive(password, &salt, log_n, params.r, params.p)?;
    let plaintext = XSalsa20Poly1305::new(key.as_slice().into())
        .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
        .map_err(|_| {
            anyhow::anyhow!(
                "wrong password (it comes from IMGPACK_SIGN_PASSWORD or COSIGN_PASSWORD)"
            )
        })?;
    Ok(Zeroizing::new(plaintext))
}

fn derive(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let params = scrypt::Params::new(log_n, r, p).context("bad scrypt parameters")?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice())
        .map_err(|_| anyhow::anyhow!("scrypt failed"))?;
    Ok(key)
}

fn decode(text: &str, field: &str) -> Result<Vec<u8>> {
    BASE64
        .decode(text)
        .with_context(|| format!("its {field} is not base64"))
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes)
}

/// Text from a file, safe to print on one line.
pub(crate) fn printable(text: &str) -> String {
    text.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_with_the_password_only() {
        let body = seal(b"pkcs8 bytes", b"secret").unwrap();
        assert_eq!(open(&body, b"secret").unwrap().as_slice(), b"pkcs8 bytes");
        let err = open(&body, b"other").unwrap_err().to_string();
        assert!(err.contains("wrong password"), "{err}");
        let empty = seal(b"k", b"").unwrap();
        assert_eq!(open(&empty, b"").unwrap().as_slice(), b"k");
    }

    #[test]
    fn costly_parameters_are_refused_before_any_work() {
        let body = seal(b"k", b"").unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["kdf"]["params"]["N"] = (1u64 << 30).into();
        let err = open(&serde_json::to_vec(&value).unwrap(), b"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not cosign's"), "{err}");
    }
}
