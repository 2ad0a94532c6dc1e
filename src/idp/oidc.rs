//! OpenID Connect: discovery, the provider's signing keys, and ID token validation
//! (signature with a pinned algorithm, `iss`, `aud`/`azp`, `exp`, `nonce`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use super::{Identity, ProviderError, get_json};

/// Discovery and keys are cached this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` refetches the key set at most this often (providers rotate keys; a flood
/// of made-up kids must not become a flood of fetches).
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: i64 = 60;

/// The parts of the discovery document Gatehouse uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Key set.
    pub jwks_uri: String,
    /// Userinfo endpoint.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

impl Metadata {
    /// Whether the provider accepts only `client_secret_post`.
    pub fn prefers_post_auth(&self) -> bool {
        self.token_endpoint_auth_methods_supported.as_ref().is_some_and(|m| {
            m.iter().any(|x| x == "client_secret_post") && !m.iter().any(|x| x == "client_secret_basic")
        })
    }
}

/// One OIDC provider's cached metadata and keys.
pub struct Oidc {
    issuer: String,
    accepted_issuers: Vec<String>,
    algorithms: Vec<Algorithm>,
    client_id: String,
    metadata: RwLock<Option<(Metadata, Instant)>>,
    jwks: RwLock<Option<(JwkSet, Instant)>>,
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    picture: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    Many(Vec<String>),
    One(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    picture: Option<String>,
}

impl Oidc {
    /// A provider at `issuer`; nothing is fetched until first use.
    pub fn new(
        issuer: String,
        extra_issuers: Vec<String>,
        algorithms: Vec<Algorithm>,
        client_id: String,
    ) -> anyhow::Result<Self> {
        reqwest::Url::parse(&issuer).map_err(|e| anyhow::anyhow!("issuer {issuer:?} is not a URL: {e}"))?;
        let mut accepted_issuers = vec![issuer.clone()];
        accepted_issuers.extend(extra_issuers);
        Ok(Self {
            issuer,
            accepted_issuers,
            algorithms,
            client_id,
            metadata: RwLock::new(None),
            jwks: RwLock::new(None),
        })
    }

    /// The discovery document, fetched once an hour.
    pub async fn metadata(&self, http: &reqwest::Client) -> Result<Metadata, ProviderError> {
        if let Some((meta, at)) = self.metadata.read().await.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(meta.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let meta: Metadata = get_json(http, &url, None).await?;
        // OpenID Connect Discovery §4.3: a document naming another issuer is not this
        // provider's.
        if meta.issuer != self.issuer {
            return Err(ProviderError::Unavailable(anyhow::anyhow!(
                "discovery document names issuer {:?}, expected {:?}",
                meta.issuer,
                self.issuer
            )));
        }
        *self.metadata.write().await = Some((meta.clone(), Instant::now()));
        Ok(meta)
    }

    /// Validates an ID token and returns the identity it asserts.
    pub async fn validate(
        &self,
        http: &reqwest::Client,
        token: &str,
        nonce_hash: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Identity, ProviderError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ProviderError::InvalidIdToken("malformed"))?;
        // Keys come from the provider's JWKS only, never from the token itself.
        if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
            return Err(ProviderError::InvalidIdToken("embedded key reference"));
        }
        if !self.algorithms.contains(&header.alg) {
            return Err(ProviderError::InvalidIdToken("algorithm not allowed"));
        }
        let jwk = self.key(http, header.kid.as_deref(), header.alg).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProviderError::InvalidIdToken("bad key"))?;

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&self.accepted_issuers);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is judged by Gatehouse's clock below, not the library's system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation).map_err(|e| {
            ProviderError::InvalidIdToken(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAlgorithm => "algorithm mismatch",
                ErrorKind::MissingRequiredClaim(_) => "missing claim",
                _ => "undecodable",
            })
        })?;
        let claims = data.claims;

        let now = now.timestamp();
        if claims.exp + LEEWAY_SECS <= now {
            return Err(ProviderError::InvalidIdToken("expired"));
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(ProviderError::InvalidIdToken("issued in the future"));
        }
        // OIDC Core §3.1.3.7: with several audiences, azp must name us; if present it must.
        let several = matches!(&claims.aud, Audience::Many(a) if a.len() > 1);
        match claims.azp.as_deref() {
            Some(azp) if azp != self.client_id => {
                return Err(ProviderError::InvalidIdToken("wrong authorized party"));
            }
            None if several => return Err(ProviderError::InvalidIdToken("azp missing")),
            _ => {}
        }
        if let Some(expected) = nonce_hash {
            let matches = claims.nonce.as_deref().is_some_and(|n| Sha256::digest(n.as_bytes()).as_slice() == expected);
            if !matches {
                return Err(ProviderError::InvalidIdToken("wrong nonce"));
            }
        }
        Ok(Identity {
            subject: claims.sub,
            email: claims.email.filter(|e| !e.is_empty()),
            email_verified: truthy(claims.email_verified.as_ref()),
            name: claims.name,
            picture: claims.picture,
        })
    }

    /// Completes an identity from the userinfo endpoint when the ID token has no email.
    pub async fn fill_from_userinfo(
        &self,
        http: &reqwest::Client,
        access_token: &SecretString,
        identity: &mut Identity,
    ) -> Result<(), ProviderError> {
        let meta = self.metadata(http).await?;
        let Some(url) = meta.userinfo_endpoint else {
            return Ok(());
        };
        let info: UserInfo = get_json(http, &url, Some(access_token)).await?;
        // OIDC Core §5.3.2: a response about someone else must not be used.
        if info.sub != identity.subject {
            return Err(ProviderError::InvalidIdToken("userinfo names another subject"));
        }
        identity.email = info.email.filter(|e| !e.is_empty());
        identity.email_verified = truthy(info.email_verified.as_ref());
        identity.name = identity.name.take().or(info.name);
        identity.picture = identity.picture.take().or(info.picture);
        Ok(())
    }

    /// The signing key for `kid` whose declared algorithm (if any) is `alg`.
    async fn key(&self, http: &reqwest::Client, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, ProviderError> {
        let cached = self.jwks.read().await.clone();
        let fresh_enough = |at: &Instant| at.elapsed() < METADATA_TTL;
        if let Some((set, at)) = &cached
            && fresh_enough(at)
            && let Some(key) = pick(set, kid, alg)
        {
            return Ok(key);
        }
        if let Some((_, at)) = &cached
            && fresh_enough(at)
            && at.elapsed() < JWKS_MIN_REFRESH
        {
            return Err(ProviderError::InvalidIdToken("unknown key"));
        }
        let meta = self.metadata(http).await?;
        let set: JwkSet = get_json(http, &meta.jwks_uri, None).await?;
        let key = pick(&set, kid, alg);
        *self.jwks.write().await = Some((set, Instant::now()));
        key.ok_or(ProviderError::InvalidIdToken("unknown key"))
    }
}

/// The key named by `kid` (or the only key, when the token names none) usable for `alg`.
fn pick(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    let usable = |k: &&Jwk| {
        !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)))
            && k.common.key_algorithm.is_none_or(|ka| Algorithm::try_from(ka).is_ok_and(|a| a == alg))
    };
    match kid {
        Some(kid) => set.keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).find(usable).cloned(),
        None => {
            let mut candidates = set.keys.iter().filter(usable);
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// `email_verified` is a boolean in the spec, a string in some providers.
fn truthy(value: Option<&serde_json::Value>) -> bool {
    match value {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}
