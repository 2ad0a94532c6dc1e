//! Encryption at rest for secrets Gatehouse must read back (provider tokens, PKCE verifiers):
//! AES-256-GCM under keys derived from the server secret, each ciphertext stored next to the
//! id of its key so that keys can rotate.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, KeyInit,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const NONCE_BYTES: usize = 12;

/// A ciphertext failed to decrypt: wrong key, unknown key id, or tampered bytes.
#[derive(Debug, thiserror::Error)]
#[error("ciphertext cannot be decrypted")]
pub struct DecryptError;

/// One AES-256-GCM key and its public id.
struct Key {
    id: String,
    aead: Aes256Gcm,
}

/// Encrypts with the current key and decrypts with any known one.
pub struct SecretCipher {
    current: Key,
    previous: Vec<Key>,
}

// Keys never reach a log.
impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCipher").field("current", &self.current.id).finish_non_exhaustive()
    }
}

impl SecretCipher {
    /// Derives the current key from `server_secret`, and decrypt-only keys from `previous`
    /// secrets (to read what was written before a rotation).
    pub fn new(server_secret: &[u8], previous: &[&[u8]]) -> Result<Self, anyhow::Error> {
        Ok(Self {
            current: derive(server_secret)?,
            previous: previous.iter().map(|s| derive(s)).collect::<Result<_, _>>()?,
        })
    }

    /// The id of the key new ciphertexts are made with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext`, binding it to `aad` (what the ciphertext belongs to, so that a
    /// ciphertext copied to another row or column does not decrypt). Output: nonce || ct || tag.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, anyhow::Error> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let sealed = self
            .current
            .aead
            .encrypt(&nonce.into(), Payload { msg: plaintext, aad })
            .map_err(|_| anyhow::anyhow!("AES-GCM encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a ciphertext made by the key `key_id` for `aad`.
    pub fn decrypt(&self, key_id: &str, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let key = std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == key_id).ok_or(DecryptError)?;
        if data.len() < NONCE_BYTES {
            return Err(DecryptError);
        }
        let (nonce, sealed) = data.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| DecryptError)?;
        key.aead.decrypt(&nonce.into(), Payload { msg: sealed, aad }).map_err(|_| DecryptError)
    }

    /// Decrypts to text.
    pub fn decrypt_string(&self, key_id: &str, data: &[u8], aad: &[u8]) -> Result<String, DecryptError> {
        String::from_utf8(self.decrypt(key_id, data, aad)?).map_err(|_| DecryptError)
    }
}

/// HKDF-SHA256 with a label of its own, so this key is unrelated to the token-hashing key
/// derived from the same secret. The id is a fingerprint of the key, safe to store.
fn derive(secret: &[u8]) -> Result<Key, anyhow::Error> {
    let hk = Hkdf::<Sha256>::new(Some(b"gatehouse"), secret);
    let mut key = [0u8; 32];
    hk.expand(b"gatehouse secret-at-rest aes-256-gcm v1", &mut key)
        .map_err(|_| anyhow::anyhow!("HKDF expand failed"))?;
    let mut fingerprint = Sha256::new();
    fingerprint.update(b"gatehouse key id v1");
    fingerprint.update(key);
    let id = format!("k1-{}", fingerprint.finalize()[..6].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let aead = Aes256Gcm::new_from_slice(&key).map_err(|_| anyhow::anyhow!("bad key length"))?;
    Ok(Key { id, aead })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_randomises() {
        let c = SecretCipher::new(b"a server secret of enough length!!", &[]).unwrap();
        let one = c.encrypt(b"ya29.token", b"aad").unwrap();
        let two = c.encrypt(b"ya29.token", b"aad").unwrap();
        assert_ne!(one, two);
        assert!(!one.windows(10).any(|w| w == b"ya29.token"));
        assert_eq!(c.decrypt(c.key_id(), &one, b"aad").unwrap(), b"ya29.token");
    }

    #[test]
    fn rejects_tampering_wrong_aad_and_unknown_keys() {
        let c = SecretCipher::new(b"a server secret of enough length!!", &[]).unwrap();
        let mut sealed = c.encrypt(b"secret", b"row-1").unwrap();
        assert!(c.decrypt(c.key_id(), &sealed, b"row-2").is_err());
        assert!(c.decrypt("k1-000000000000", &sealed, b"row-1").is_err());
        assert!(c.decrypt(c.key_id(), &sealed[..5], b"row-1").is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(c.decrypt(c.key_id(), &sealed, b"row-1").is_err());
    }

    #[test]
    fn previous_keys_decrypt_after_rotation() {
        let old = SecretCipher::new(b"the old secret of enough length!!!", &[]).unwrap();
        let sealed = old.encrypt(b"refresh", b"x").unwrap();
        let new =
            SecretCipher::new(b"the new secret of enough length!!!", &[b"the old secret of enough length!!!"]).unwrap();
        assert_ne!(new.key_id(), old.key_id());
        assert_eq!(new.decrypt(old.key_id(), &sealed, b"x").unwrap(), b"refresh");
    }
}
