//! Access tokens, their signing keys, the revocation feed and service credentials.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use super::{MIN_SECRET_BYTES, delta, parse_secret};
use crate::domain::keys::{AccessTokenConfig, SigningAlgorithm};

/// Access tokens, their signing keys, the revocation feed and service credentials.
#[derive(Clone, Args)]
#[command(next_help_heading = "Service mesh")]
pub struct MeshArgs {
    /// Issuer of access tokens (`iss`); also the public base URL of the HTTP side port, where
    /// verifiers find the keys [default: http://<http-listen>].
    #[arg(long, env = "GATEHOUSE_ISSUER")]
    pub issuer: Option<String>,

    /// Audiences access tokens may be issued for (comma-separated service names).
    #[arg(long, env = "GATEHOUSE_ACCESS_TOKEN_AUDIENCES", value_delimiter = ',')]
    pub access_token_audiences: Vec<String>,

    /// Lifetime of an access token.
    #[arg(long, env = "GATEHOUSE_ACCESS_TOKEN_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Signature algorithm of new signing keys: EdDSA, ES256 or RS256.
    #[arg(long, env = "GATEHOUSE_SIGNING_ALGORITHM", default_value = "EdDSA")]
    pub signing_algorithm: SigningAlgorithm,

    /// A signing key that has signed this long is replaced. The successor is published
    /// GATEHOUSE_JWKS_MAX_AGE + GATEHOUSE_SIGNING_KEY_CHECK_INTERVAL before it signs, and the old
    /// key stays published for the token TTL + the same two + 60 s after it stops.
    #[arg(long, env = "GATEHOUSE_SIGNING_KEY_ROTATION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub signing_key_rotation: Duration,

    /// How often each replica re-reads the signing keys (to pick up another replica's or
    /// `gatehouse keys rotate`'s new key) and rotates by age. Part of how long a new key waits
    /// before it signs: give `gatehouse keys rotate` the servers' value.
    #[arg(long, env = "GATEHOUSE_SIGNING_KEY_CHECK_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub signing_key_check_interval: Duration,

    /// How long verifiers may cache the JWK Set (its Cache-Control max-age). Part of how long
    /// a new key waits before it signs: give `gatehouse keys rotate` the servers' value.
    #[arg(long, env = "GATEHOUSE_JWKS_MAX_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_max_age: Duration,

    /// Compatibility mode: sign access tokens with HS256 and the shared BETTER_AUTH_SECRET, for
    /// existing code that verifies that way. Weaker: every verifier can also forge tokens.
    #[arg(long, env = "GATEHOUSE_HS256_COMPAT", default_value_t = false, action = clap::ArgAction::Set)]
    pub hs256_compat: bool,

    /// The shared HS256 secret of the compatibility mode.
    #[arg(long, env = "BETTER_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub better_auth_secret: Option<SecretString>,

    /// Service API keys for AdminService, IntrospectToken and WatchRevocations, as
    /// NAME=SHA256HEX of the key (comma-separated); the keys themselves are never configured.
    #[arg(long, env = "GATEHOUSE_ADMIN_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub admin_api_keys: Vec<String>,

    /// Client-certificate subject common names or SANs (DNS or URI, e.g. SPIFFE ids) allowed
    /// to call the service APIs (comma-separated).
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_NAMES", value_delimiter = ',')]
    pub admin_client_names: Vec<String>,

    /// How long revocation events are kept for watchers that resume.
    #[arg(long, env = "GATEHOUSE_REVOCATION_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub revocation_retention: Duration,
}

impl MeshArgs {
    /// How often the keys are re-read: as configured, but not in a busy loop.
    pub fn key_check_interval(&self) -> Duration {
        self.signing_key_check_interval.max(Duration::from_millis(50))
    }

    /// The access-token settings; tokens name `default_issuer` unless an issuer is configured.
    pub fn access_tokens(&self, default_issuer: String) -> anyhow::Result<AccessTokenConfig> {
        let hs256_secret = match (self.hs256_compat, &self.better_auth_secret) {
            (false, _) => None,
            (true, Some(secret)) if secret.expose_secret().len() >= MIN_SECRET_BYTES => {
                tracing::warn!("HS256 compatibility mode: access tokens are signed with the shared BETTER_AUTH_SECRET");
                Some(secret.expose_secret().as_bytes().to_vec())
            }
            (true, _) => bail!("GATEHOUSE_HS256_COMPAT needs BETTER_AUTH_SECRET of at least 32 bytes"),
        };
        Ok(AccessTokenConfig {
            issuer: self.issuer.clone().unwrap_or(default_issuer).trim_end_matches('/').to_owned(),
            audiences: self
                .access_token_audiences
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            ttl: delta(self.access_token_ttl)?,
            algorithm: self.signing_algorithm,
            rotate_after: delta(self.signing_key_rotation)?,
            jwks_max_age: delta(self.jwks_max_age)?,
            check_interval: delta(self.key_check_interval())?,
            hs256_secret,
        })
    }
}
