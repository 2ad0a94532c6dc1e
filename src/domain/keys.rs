//! Access tokens for the mesh: short-lived JWTs signed with keys that Gatehouse generates,
//! stores encrypted, rotates, and publishes as a JWK Set so that any service can verify tokens
//! offline.

use std::{str::FromStr, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, jwk::Jwk};
use serde_json::json;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{cipher::SecretCipher, clock::Clock, error::Error};
use crate::storage::{SigningKeyRow, Store};

/// Leeway for clock skew between Gatehouse and verifiers (RFC 7519 §4.1.4: "a few minutes" at
/// most).
pub const LEEWAY_SECONDS: u64 = 60;

/// The `typ` header of access tokens (RFC 9068), required when verifying.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Signature algorithm of access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default: small keys, fast, deterministic).
    EdDsa,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048-bit keys.
    Rs256,
}

impl SigningAlgorithm {
    /// The JWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// A new private key, as PKCS#8 DER.
    fn generate(self) -> Result<Vec<u8>, Error> {
        use p256::pkcs8::EncodePrivateKey as _;
        let failed = |e: &dyn std::fmt::Display| Error::Internal(anyhow::anyhow!("generating a signing key: {e}"));
        match self {
            Self::EdDsa => {
                // PKCS#8 v1 (RFC 8410): a fixed 16-byte prefix and the 32-byte seed. Without the
                // optional public key, as jsonwebtoken expects.
                const PREFIX: [u8; 16] =
                    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| failed(&e))?;
                Ok([PREFIX.as_slice(), seed.as_slice()].concat())
            }
            Self::Es256 => {
                let key = p256::SecretKey::random(&mut rand_core::OsRng);
                Ok(key.to_pkcs8_der().map_err(|e| failed(&e))?.as_bytes().to_vec())
            }
            Self::Rs256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| failed(&e))?;
                // jsonwebtoken takes RSA keys as PKCS#1 DER.
                Ok(key.to_pkcs1_der().map_err(|e| failed(&e))?.as_bytes().to_vec())
            }
        }
    }

    fn encoding_key(self, der: &[u8]) -> EncodingKey {
        match self {
            Self::EdDsa => EncodingKey::from_ed_der(der),
            Self::Es256 => EncodingKey::from_ec_der(der),
            Self::Rs256 => EncodingKey::from_rsa_der(der),
        }
    }
}

impl FromStr for SigningAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "EDDSA" | "ED25519" => Ok(Self::EdDsa),
            "ES256" => Ok(Self::Es256),
            "RS256" => Ok(Self::Rs256),
            _ => Err(format!("{s:?} is not EdDSA, ES256 or RS256")),
        }
    }
}

/// Access-token settings.
#[derive(Clone)]
pub struct AccessTokenConfig {
    /// `iss` claim, and the base of the published discovery document.
    pub issuer: String,
    /// Audiences a token may be issued for.
    pub audiences: Vec<String>,
    /// Lifetime of a token.
    pub ttl: TimeDelta,
    /// Algorithm of new keys.
    pub algorithm: SigningAlgorithm,
    /// A key that has signed this long is replaced.
    pub rotate_after: TimeDelta,
    /// How long verifiers may cache the published key set (its `Cache-Control: max-age`).
    pub jwks_max_age: TimeDelta,
    /// How often every replica re-reads the keys.
    pub check_interval: TimeDelta,
    /// Shared secret of the HS256 compatibility mode (weaker: anyone who can verify can also
    /// forge); `None` keeps it off.
    pub hs256_secret: Option<Vec<u8>>,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// User id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// Email.
    pub email: String,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Display name.
    pub name: String,
    /// How the user authenticated (RFC 8176 values).
    #[serde(default)]
    pub amr: Vec<String>,
    /// The assurance level: `aal1` or `aal2`.
    #[serde(default)]
    pub acr: String,
    /// When the user authenticated (seconds since the epoch).
    #[serde(default)]
    pub auth_time: i64,
}

impl AccessTokenConfig {
    /// How long a new key is published before it signs: every replica has re-read the keys
    /// by then (one check interval), and so has every verifier's cached key set (one max-age
    /// after that replica's set first showed the key).
    pub fn prepublish(&self) -> TimeDelta {
        self.jwks_max_age + self.check_interval
    }

    /// How long a retired key stays published: the last token it signed lives a TTL (plus the
    /// leeway verifiers allow), and a replica that has not yet re-read the keys may have
    /// signed with it up to a check interval later; the max-age covers a verifier that cached
    /// the set meanwhile.
    pub fn retention(&self) -> TimeDelta {
        self.ttl + self.jwks_max_age + self.check_interval + TimeDelta::seconds(LEEWAY_SECONDS as i64)
    }
}

struct LoadedKey {
    kid: String,
    algorithm: SigningAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: serde_json::Value,
    activates_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

impl LoadedKey {
    /// Whether it is in the published set at `now`: from its creation (ahead of signing) until
    /// `retention` after it stopped signing.
    fn published(&self, now: DateTime<Utc>, retention: TimeDelta) -> bool {
        self.retired_at.is_none_or(|retired| now < retired + retention)
    }

    /// Whether it signs at `now`.
    fn signs(&self, now: DateTime<Utc>) -> bool {
        self.activates_at <= now && self.retired_at.is_none_or(|retired| now < retired)
    }
}

/// The outcome of `gatehouse keys rotate`.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new key's id.
    pub kid: String,
    /// When it starts signing (it is published at once).
    pub activates_at: DateTime<Utc>,
}

/// The signing keys, loaded from the store, and the operations on tokens.
pub struct KeyRing {
    store: Arc<dyn Store>,
    cipher: Arc<SecretCipher>,
    clock: Arc<dyn Clock>,
    config: AccessTokenConfig,
    keys: RwLock<Vec<LoadedKey>>,
}

impl KeyRing {
    /// Loads the keys, creating the first one (or a replacement for one past its age).
    pub async fn open(
        store: Arc<dyn Store>,
        cipher: Arc<SecretCipher>,
        clock: Arc<dyn Clock>,
        config: AccessTokenConfig,
    ) -> Result<Self, Error> {
        let ring = Self { store, cipher, clock, config, keys: RwLock::new(Vec::new()) };
        ring.reload().await?;
        ring.rotate_if_due().await?;
        Ok(ring)
    }

    /// The configuration.
    pub fn config(&self) -> &AccessTokenConfig {
        &self.config
    }

    /// Re-reads the keys (another replica may have rotated).
    pub async fn reload(&self) -> Result<(), Error> {
        let rows = self.store.list_signing_keys().await?;
        let mut loaded = Vec::with_capacity(rows.len());
        for row in rows {
            loaded.push(self.load(row)?);
        }
        *self.keys.write().await = loaded;
        Ok(())
    }

    fn load(&self, row: SigningKeyRow) -> Result<LoadedKey, Error> {
        let algorithm = SigningAlgorithm::from_str(&row.algorithm).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
        let der = self.cipher.decrypt(&row.cipher_key_id, &row.private_key, row.kid.as_bytes()).map_err(|_| {
            Error::Internal(anyhow::anyhow!("signing key {} does not decrypt with the server secret", row.kid))
        })?;
        let public_jwk: serde_json::Value =
            serde_json::from_str(&row.public_jwk).map_err(|e| Error::Internal(anyhow::anyhow!("stored JWK: {e}")))?;
        let jwk: Jwk = serde_json::from_value(public_jwk.clone())
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored JWK: {e}")))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| Error::Internal(anyhow::anyhow!("stored JWK: {e}")))?;
        Ok(LoadedKey {
            kid: row.kid,
            algorithm,
            encoding: algorithm.encoding_key(&der),
            decoding,
            public_jwk,
            activates_at: row.activates_at,
            retired_at: row.retired_at,
        })
    }

    /// Adds a key if there is none (signing at once), or a successor, published now and
    /// signing a pre-publication period from now, when the newest key will have signed for
    /// its rotation age by then. Nothing while a successor is already waiting.
    pub async fn rotate_if_due(&self) -> Result<bool, Error> {
        let now = self.clock.now();
        let prepublish = self.config.prepublish();
        let due = match self.keys.read().await.iter().find(|k| k.retired_at.is_none()) {
            // The first key: no token or cached set can miss it.
            None => Some((None, now)),
            Some(newest) if newest.activates_at > now => None,
            Some(newest) if now + prepublish - newest.activates_at >= self.config.rotate_after => {
                Some((Some(newest.kid.clone()), now + prepublish))
            }
            Some(_) => None,
        };
        match due {
            Some((retire, activates_at)) => self.add_key(retire, activates_at).await,
            None => Ok(false),
        }
    }

    /// Adds a successor to the newest key (`gatehouse keys rotate`): published at once, signing
    /// after the pre-publication period, when the newest key retires.
    pub async fn rotate(&self) -> Result<Rotated, Error> {
        let newest = self.newest().await.map(|k| k.kid);
        let now = self.clock.now();
        let activates_at = if newest.is_some() { now + self.config.prepublish() } else { now };
        self.add_key(newest, activates_at).await?;
        self.newest().await.ok_or_else(|| Error::Internal(anyhow::anyhow!("no signing key after rotation")))
    }

    /// The newest key: the one that signs, or the successor waiting to.
    async fn newest(&self) -> Option<Rotated> {
        self.keys
            .read()
            .await
            .iter()
            .find(|k| k.retired_at.is_none())
            .map(|k| Rotated { kid: k.kid.clone(), activates_at: k.activates_at })
    }

    async fn add_key(&self, retire: Option<String>, activates_at: DateTime<Utc>) -> Result<bool, Error> {
        let algorithm = self.config.algorithm;
        // RSA key generation takes a while: keep it off the async workers.
        let der = tokio::task::spawn_blocking(move || algorithm.generate())
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("key generation: {e}")))??;
        let kid = format!("{}-{}", algorithm.as_str().to_ascii_lowercase(), Uuid::new_v4().simple());
        let encoding = algorithm.encoding_key(&der);
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm.jwt())
            .map_err(|e| Error::Internal(anyhow::anyhow!("public JWK: {e}")))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let public_jwk = serde_json::to_string(&jwk).map_err(|e| Error::Internal(anyhow::anyhow!("JWK: {e}")))?;
        let sealed = self.cipher.encrypt(&der, kid.as_bytes()).map_err(Error::Internal)?;
        let row = SigningKeyRow {
            kid: kid.clone(),
            algorithm: algorithm.as_str().to_owned(),
            private_key: sealed,
            cipher_key_id: self.cipher.key_id().to_owned(),
            public_jwk,
            created_at: self.clock.now(),
            activates_at,
            retired_at: None,
        };
        let added = self.store.add_signing_key(&row, retire.as_deref()).await?;
        if added {
            tracing::info!(kid, algorithm = algorithm.as_str(), %activates_at, "new access-token signing key published");
        }
        self.reload().await?;
        Ok(added)
    }

    /// The published key set: a successor waiting to sign, the signing key, and every retired
    /// key whose tokens may still be alive somewhere.
    pub async fn jwks_json(&self) -> String {
        let now = self.clock.now();
        let retention = self.config.retention();
        let keys: Vec<serde_json::Value> = self
            .keys
            .read()
            .await
            .iter()
            .filter(|k| k.published(now, retention))
            .map(|k| k.public_jwk.clone())
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// Signs an access token for `claims` with the current key (or the HS256 shared secret in
    /// compatibility mode).
    pub async fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let failed = |e: jsonwebtoken::errors::Error| Error::Internal(anyhow::anyhow!("signing: {e}"));
        if let Some(secret) = &self.config.hs256_secret {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            // Verifiers of the shared secret ignore `typ`; Gatehouse's own check requires it.
            header.typ = Some(ACCESS_TOKEN_TYPE.into());
            return jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).map_err(failed);
        }
        let now = self.clock.now();
        let keys = self.keys.read().await;
        // The latest key that has started signing; one published but not yet active waits,
        // whatever this replica's view of its predecessor.
        let key = keys
            .iter()
            .filter(|k| k.signs(now))
            .max_by_key(|k| k.activates_at)
            // Only with clocks apart (a first key made by a `keys rotate` whose clock runs
            // ahead): the newest key rather than no token at all.
            .or_else(|| keys.iter().find(|k| k.retired_at.is_none()))
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no current signing key")))?;
        let mut header = Header::new(key.algorithm.jwt());
        header.kid = Some(key.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(failed)
    }

    /// Verifies an access token: type `at+jwt`, signature by a key published now with its own
    /// algorithm (never `none`, never a key the header supplies), issuer, a configured
    /// audience, `exp` and `nbf`.
    pub async fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The header may only name a key, never carry or point to one.
        if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
            return None;
        }
        // Only access tokens (RFC 9068 §4): not an ID token or any other JWT a key of ours, or
        // the shared secret, might have signed. The media type may carry its `application/`.
        let typ = header.typ.as_deref()?.to_ascii_lowercase();
        if typ.strip_prefix("application/").unwrap_or(&typ) != ACCESS_TOKEN_TYPE {
            return None;
        }
        let now = self.clock.now();
        let validation = |alg: jsonwebtoken::Algorithm| {
            let mut v = Validation::new(alg);
            v.set_issuer(&[self.config.issuer.as_str()]);
            v.set_audience(&self.config.audiences);
            v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            // Times are checked below against the application clock, the one that issued them.
            v.validate_exp = false;
            v.validate_nbf = false;
            v
        };
        let claims = match (&self.config.hs256_secret, header.alg) {
            (Some(secret), jsonwebtoken::Algorithm::HS256) => {
                let v = validation(jsonwebtoken::Algorithm::HS256);
                jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v).ok()?.claims
            }
            _ => {
                let kid = header.kid?;
                let keys = self.keys.read().await;
                // A key out of the published set is out for good: what it signs is refused even
                // if its claims look fresh (a leaked retired key, a token made under a longer TTL).
                let retention = self.config.retention();
                let key = keys.iter().find(|k| k.kid == kid && k.published(now, retention))?;
                if header.alg != key.algorithm.jwt() {
                    return None;
                }
                let v = validation(key.algorithm.jwt());
                jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).ok()?.claims
            }
        };
        let now = now.timestamp();
        let leeway = LEEWAY_SECONDS as i64;
        (claims.exp + leeway > now && claims.nbf - leeway <= now).then_some(claims)
    }
}

/// The first 16 bytes of a random UUID, base64url: a compact, unique token id.
pub fn new_jti() -> String {
    URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}
