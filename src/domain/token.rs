//! Secret tokens (sessions, email links): 256 random bits shown once, stored only as
//! HMAC-SHA256(key derived from the server secret, token).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Recognisable prefix of session tokens, so that secret scanners can spot leaked ones.
pub const SESSION_PREFIX: &str = "gate_";
/// Prefix of the single-use tokens in email links (verification, reset).
pub const LINK_PREFIX: &str = "gatelink_";
/// Prefix of second-factor challenge tokens.
pub const CHALLENGE_PREFIX: &str = "gatemfa_";
const TOKEN_BYTES: usize = 32;
/// Length of the unpadded base64url encoding of 32 bytes.
const BODY_LEN: usize = 43;

/// A secret token in the clear. Never printed, never stored.
pub struct SecretToken(String);

/// A session token.
pub type SessionToken = SecretToken;

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

impl SecretToken {
    /// A new session token from the OS random number generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        Self::generate_with(SESSION_PREFIX)
    }

    /// A new token with `prefix` from the OS random number generator.
    pub fn generate_with(prefix: &str) -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// Accepts a presented session token only if it has the shape of one, so that garbage
    /// never reaches the database.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::parse_with(raw, SESSION_PREFIX)
    }

    /// Accepts a presented token with `prefix` only if it has the right shape.
    pub fn parse_with(raw: &str, prefix: &str) -> Option<Self> {
        let body = raw.strip_prefix(prefix)?;
        (body.len() == BODY_LEN && URL_SAFE_NO_PAD.decode(body).is_ok_and(|b| b.len() == TOKEN_BYTES))
            .then(|| Self(raw.to_owned()))
    }

    /// The token text, to put in a link.
    pub fn as_str(&self) -> &str {
        &self.0
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
    /// A hasher keyed by a key derived from the server secret for `purpose` (e.g.
    /// `"session"`).
    pub fn new(server_secret: &[u8], purpose: &str) -> Result<Self, hmac::digest::InvalidLength> {
        // Derive rather than use the secret directly, so each kind of token has its own key and
        // hashes of one kind can never be presented as another.
        let mut derive = Hmac::<Sha256>::new_from_slice(server_secret)?;
        derive.update(b"gatehouse token v1: ");
        derive.update(purpose.as_bytes());
        let keyed = Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes())?;
        Ok(Self { keyed })
    }

    /// HMAC-SHA256 of a short secret that is not a token (a normalised recovery code).
    pub fn hash_text(&self, text: &str) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// HMAC-SHA256 of the token.
    pub fn hash(&self, token: &SecretToken) -> Vec<u8> {
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
            assert!(SessionToken::parse(&token).is_some(), "{token} does not parse");
            assert!(seen.insert(token));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "gate_", "gate_abc", "Bearer gate_x", &format!("gate_{}", "A".repeat(44))] {
            assert!(SessionToken::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hash_is_keyed() {
        let token = SessionToken::parse(&format!("gate_{}", "A".repeat(43))).unwrap();
        let one = TokenHasher::new(b"one secret", "session").unwrap();
        let another = TokenHasher::new(b"another secret", "session").unwrap();
        assert_ne!(one.hash(&token), another.hash(&token));
        let link = TokenHasher::new(b"one secret", "email link").unwrap();
        assert_ne!(one.hash(&token), link.hash(&token));
        assert_eq!(one.hash(&token), one.hash(&token));
        assert_eq!(one.hash(&token).len(), 32);
    }
}
