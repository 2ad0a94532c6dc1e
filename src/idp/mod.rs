//! Identity providers over HTTP: OpenID Connect (discovery, ID-token validation, userinfo),
//! GitHub's REST API, and the OAuth 2.0 code exchange and refresh they share. An adapter beside
//! `mail/` and `ratelimit/`: it speaks to providers and reports who the person is; the linking
//! rules stay in `domain::oauth`.

pub mod github;
pub mod oidc;
pub mod provider;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

/// Why a provider call failed, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider did not answer, timed out, or answered nonsense: retry later.
    #[error("identity provider unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The provider refused the authorization code or refresh token (`error` code named).
    #[error("identity provider rejected the grant: {0}")]
    Rejected(String),
    /// The provider refused our client credentials: a configuration problem.
    #[error("identity provider refused the client: {0}")]
    Misconfigured(String),
    /// The ID token failed validation (reason named, for the log only).
    #[error("invalid ID token: {0}")]
    InvalidIdToken(&'static str),
}

impl ProviderError {
    /// A transport failure or an unusable answer.
    pub fn unavailable(e: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(e.into())
    }
}

/// Who the provider says the person is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The provider's stable id for the person.
    pub subject: String,
    /// Email, if shared.
    pub email: Option<String>,
    /// Whether the provider vouches for the email.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// Picture URL.
    pub picture: Option<String>,
}

/// Tokens the provider issued.
pub struct ProviderTokens {
    /// Access token.
    pub access_token: SecretString,
    /// Refresh token, if issued.
    pub refresh_token: Option<SecretString>,
    /// ID token, if issued (OIDC).
    pub id_token: Option<SecretString>,
    /// When the access token expires, if the provider said.
    pub expires_at: Option<DateTime<Utc>>,
    /// Scopes granted.
    pub scopes: Vec<String>,
}

/// GETs JSON, treating every failure as the provider being unavailable.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&SecretString>,
) -> Result<T, ProviderError> {
    let mut request = http.get(url).header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request.send().await.map_err(ProviderError::unavailable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProviderError::Unavailable(anyhow::anyhow!("{url} answered {status}")));
    }
    response.json().await.map_err(ProviderError::unavailable)
}

/// A reqwest client for provider calls: bounded in time and never following redirects (an
/// endpoint that redirects could otherwise send a token elsewhere).
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()?)
}
