//! Identity for other services: access tokens exchanged for sessions, and introspection of
//! either kind of token.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    core::Core,
    error::{AuthFailure, Error},
    keys::{Claims, KeyRing, new_jti},
    session::{Authenticated, Sessions},
};

/// An issued access token.
#[derive(Debug)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
}

/// What introspection says about an active token.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    /// `session` or `access_token`.
    pub token_type: &'static str,
    /// User id.
    pub sub: Uuid,
    /// Session id.
    pub sid: Uuid,
    /// Audience (access tokens).
    pub aud: Option<String>,
    /// Issuer (access tokens).
    pub iss: Option<String>,
    /// User's email.
    pub email: String,
    /// Whether it is verified.
    pub email_verified: bool,
    /// Expiry.
    pub exp: DateTime<Utc>,
    /// Issue time.
    pub iat: DateTime<Utc>,
}

/// Access tokens and introspection.
pub struct Mesh {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    keys: Arc<KeyRing>,
}

impl Mesh {
    /// Token operations with `keys`.
    pub fn new(core: Arc<Core>, sessions: Arc<Sessions>, keys: Arc<KeyRing>) -> Self {
        Self { core, sessions, keys }
    }

    /// The key ring (for the JWKS endpoints and rotation).
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Exchanges the caller's session for a token for `audience`. It never outlives the session.
    #[tracing::instrument(skip_all)]
    pub async fn issue(&self, caller: &Authenticated, audience: &str) -> Result<AccessToken, Error> {
        let config = self.keys.config();
        let audience = audience.trim();
        if audience.is_empty() {
            return Err(Error::invalid("audience", "is required"));
        }
        if !config.audiences.iter().any(|a| a == audience) {
            return Err(Error::invalid("audience", "is not a configured audience"));
        }
        let now = self.core.now();
        let expires_at = (now + config.ttl).min(caller.session.expires_at);
        let claims = Claims {
            iss: config.issuer.clone(),
            sub: caller.user.id.to_string(),
            aud: audience.to_owned(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: new_jti(),
            sid: caller.session.id.to_string(),
            email: caller.user.email.clone(),
            email_verified: caller.user.email_verified,
            name: caller.user.name.clone(),
            amr: caller.session.assurance.amr.clone(),
            acr: caller.session.assurance.acr().to_owned(),
            auth_time: caller.session.created_at.timestamp(),
        };
        let token = self.keys.sign(&claims).await?;
        Ok(AccessToken { token, expires_at })
    }

    /// Whether `token` (a session token or an access token) is active, and for whom. An access
    /// token is inactive once its session is revoked or its user disabled.
    #[tracing::instrument(skip_all)]
    pub async fn introspect(&self, token: &str) -> Result<Option<Introspection>, Error> {
        let token = token.trim();
        if token.starts_with(super::token::SESSION_PREFIX) {
            return match self.sessions.authenticate(Some(token)).await {
                Ok(a) => Ok(Some(Introspection {
                    token_type: "session",
                    sub: a.user.id,
                    sid: a.session.id,
                    aud: None,
                    iss: None,
                    email: a.user.email,
                    email_verified: a.user.email_verified,
                    exp: a.session.expires_at,
                    iat: a.session.created_at,
                })),
                Err(Error::Unauthenticated(AuthFailure::InvalidSession)) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let Some(claims) = self.keys.verify(token).await else { return Ok(None) };
        let (Ok(sub), Ok(sid)) = (Uuid::parse_str(&claims.sub), Uuid::parse_str(&claims.sid)) else { return Ok(None) };
        let Some(session) = self.sessions.live(sid).await? else { return Ok(None) };
        if session.user_id != sub {
            return Ok(None);
        }
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        Ok(Some(Introspection {
            token_type: "access_token",
            sub,
            sid,
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            email: claims.email,
            email_verified: claims.email_verified,
            exp: at(claims.exp),
            iat: at(claims.iat),
        }))
    }
}
