//! Session tokens: 256 random bits shown to the client once, stored only as
//! HMAC-SHA256(server secret, token).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Recognisable prefix so that secret scanners can spot leaked tokens.
pub const TOKEN_PREFIX: &str = "gate_";
const TOKEN_BYTES: usize = 32;
/// Length of a well-formed token: the prefix plus unpadded base64url of 32 bytes.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// A session token in the clear. Never printed, never stored.
pub struct SessionToken(String);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    /// A new token from the OS random number generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Accepts a presented token only if it has the shape of one, so that garbage never
    /// reaches the database.
    pub fn parse(raw: &str) -> Option<Self> {
        let body = raw.strip_prefix(TOKEN_PREFIX)?;
        (raw.len() == TOKEN_LEN
            && URL_SAFE_NO_PAD
                .decode(body)
                .is_ok_and(|b| b.len() == TOKEN_BYTES))
        .then(|| Self(raw.to_owned()))
    }

    /// The token text, to hand to the client once.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Keyed hash of tokens; the key is the server secret, which never reaches the database.
#[derive(Clone)]
pub struct TokenHasher {
    /// HMAC state already keyed; cloned per token, which skips the key schedule.
    keyed: Hmac<Sha256>,
}

impl TokenHasher {
    /// A hasher keyed by a purpose-specific key derived from the server secret.
    pub fn new(server_secret: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        // Derive rather than use the secret directly, so other features can key their own
        // hashes from the same secret without the outputs ever being comparable.
        let mut derive = Hmac::<Sha256>::new_from_slice(server_secret)?;
        derive.update(b"gatehouse session token v1");
        let keyed = Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes())?;
        Ok(Self { keyed })
    }

    /// HMAC-SHA256 of the token.
    pub fn hash(&self, token: &SessionToken) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(token.0.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let token = SessionToken::generate().unwrap().into_string();
            assert!(
                SessionToken::parse(&token).is_some(),
                "{token} does not parse"
            );
            assert!(seen.insert(token));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "gate_",
            "gate_abc",
            "Bearer gate_x",
            &format!("gate_{}", "A".repeat(44)),
        ] {
            assert!(SessionToken::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hash_is_keyed() {
        let token = SessionToken::parse(&format!("gate_{}", "A".repeat(43))).unwrap();
        let one = TokenHasher::new(b"one secret").unwrap();
        let another = TokenHasher::new(b"another secret").unwrap();
        assert_ne!(one.hash(&token), another.hash(&token));
        assert_eq!(one.hash(&token), one.hash(&token));
        assert_eq!(one.hash(&token).len(), 32);
    }
}
