//! Identity providers: their configuration, the authorization-code exchange (through the
//! `oauth2` crate) and how each kind tells who the person is.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::Algorithm;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardErrorResponse, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
    basic::{
        BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Identity, ProviderError, ProviderTokens, github, oidc::Oidc};

/// How a provider is reached and what kind it is.
#[derive(Clone)]
pub struct ProviderSettings {
    /// Name used in the API (`google`, `github`, or a generic provider's name).
    pub name: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// The only redirect URIs accepted, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Kind-specific settings.
    pub kind: ProviderKind,
}

// The client secret never reaches a log.
impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uris", &self.redirect_uris)
            .field("scopes", &self.scopes)
            .field("kind", &self.kind)
            .finish()
    }
}

/// OpenID Connect or GitHub's plain OAuth 2.0.
#[derive(Debug, Clone)]
pub enum ProviderKind {
    /// An OpenID Connect provider found through its discovery document.
    Oidc {
        /// Issuer URL; the discovery document is `<issuer>/.well-known/openid-configuration`
        /// and must name this issuer.
        issuer: String,
        /// Other `iss` values the provider uses in ID tokens (Google also writes
        /// `accounts.google.com`).
        extra_issuers: Vec<String>,
        /// ID token signature algorithms accepted.
        algorithms: Vec<Algorithm>,
        /// Extra authorization request parameters (Google: `access_type=offline`).
        extra_params: Vec<(String, String)>,
    },
    /// GitHub: the user and emails come from its REST API.
    GitHub {
        /// Authorization endpoint.
        authorize_url: String,
        /// Token endpoint.
        token_url: String,
        /// REST API base (`/user`, `/user/emails`).
        api_url: String,
    },
}

/// The `id_token` field of an OpenID Connect token response.
#[derive(Clone, Deserialize, Serialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

// Keeps the ID token out of debug output (the oauth2 crate requires Debug).
impl fmt::Debug for IdTokenField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdTokenField(..)")
    }
}

impl ExtraTokenFields for IdTokenField {}

type CodeTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    CodeTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What StartOAuth hands the browser.
pub struct AuthorizationRequest {
    /// Where to send the browser.
    pub url: String,
    /// The PKCE verifier to keep (encrypted) until the code comes back.
    pub pkce_verifier: SecretString,
}

/// A configured provider with its HTTP client and cached metadata.
pub struct Provider {
    settings: ProviderSettings,
    http: reqwest::Client,
    oidc: Option<Oidc>,
}

impl Provider {
    /// Checks the settings and prepares the provider; nothing is fetched yet.
    pub fn new(settings: ProviderSettings, http: reqwest::Client) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !settings.redirect_uris.is_empty(),
            "provider {}: at least one redirect URI is required",
            settings.name
        );
        for uri in &settings.redirect_uris {
            RedirectUrl::new(uri.clone())
                .map_err(|e| anyhow::anyhow!("provider {}: redirect URI {uri:?}: {e}", settings.name))?;
        }
        anyhow::ensure!(!settings.client_id.is_empty(), "provider {}: client id is empty", settings.name);
        let oidc = match &settings.kind {
            ProviderKind::Oidc { issuer, extra_issuers, algorithms, .. } => {
                anyhow::ensure!(!algorithms.is_empty(), "provider {}: no ID token algorithm allowed", settings.name);
                Some(Oidc::new(issuer.clone(), extra_issuers.clone(), algorithms.clone(), settings.client_id.clone())?)
            }
            ProviderKind::GitHub { authorize_url, token_url, api_url } => {
                AuthUrl::new(authorize_url.clone())?;
                TokenUrl::new(token_url.clone())?;
                reqwest::Url::parse(api_url)?;
                None
            }
        };
        Ok(Self { settings, http, oidc })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether ID tokens (and so a nonce) are part of this provider's flow.
    pub fn is_oidc(&self) -> bool {
        self.oidc.is_some()
    }

    /// Whether `uri` is exactly one of the configured redirect URIs.
    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.settings.redirect_uris.iter().any(|u| u == uri)
    }

    /// The authorization URL for a new flow, with PKCE S256 and, for OIDC, the nonce.
    pub async fn authorization_request(
        &self,
        state: &str,
        nonce: Option<&str>,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, ProviderError> {
        let client = self.client(redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        if let Some(nonce) = nonce {
            request = request.add_extra_param("nonce", nonce.to_owned());
        }
        if let ProviderKind::Oidc { extra_params, .. } = &self.settings.kind {
            for (k, v) in extra_params {
                request = request.add_extra_param(k.clone(), v.clone());
            }
        }
        let (url, _) = request.url();
        Ok(AuthorizationRequest { url: url.to_string(), pkce_verifier: SecretString::from(verifier.secret().clone()) })
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: SecretString,
        redirect_uri: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderTokens, ProviderError> {
        let client = self.client(redirect_uri).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose_secret().to_owned()))
            .request_async(&TokenClient(self.http.clone()))
            .await
            .map_err(token_error)?;
        Ok(self.tokens(response, None, now))
    }

    /// Gets a new access token with a refresh token. The old refresh token is kept when the
    /// provider does not rotate it.
    pub async fn refresh(
        &self,
        refresh_token: SecretString,
        now: DateTime<Utc>,
    ) -> Result<ProviderTokens, ProviderError> {
        // Token requests need no redirect URI; any configured one satisfies the type.
        let redirect = self.settings.redirect_uris.first().map(String::as_str).unwrap_or_default();
        let client = self.client(redirect).await?;
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .request_async(&TokenClient(self.http.clone()))
            .await
            .map_err(token_error)?;
        Ok(self.tokens(response, Some(refresh_token), now))
    }

    /// Who the person is: from the validated ID token (and userinfo when the token lacks
    /// the email) for OIDC, from the REST API for GitHub.
    pub async fn identity(
        &self,
        tokens: &ProviderTokens,
        nonce_hash: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Identity, ProviderError> {
        match (&self.oidc, &self.settings.kind) {
            (Some(oidc), _) => {
                let id_token =
                    tokens.id_token.as_ref().ok_or(ProviderError::InvalidIdToken("no ID token in the response"))?;
                let mut identity = oidc.validate(&self.http, id_token.expose_secret(), nonce_hash, now).await?;
                if identity.email.is_none() {
                    oidc.fill_from_userinfo(&self.http, &tokens.access_token, &mut identity).await?;
                }
                Ok(identity)
            }
            (None, ProviderKind::GitHub { api_url, .. }) => {
                github::identity(&self.http, api_url, &tokens.access_token).await
            }
            (None, ProviderKind::Oidc { .. }) => {
                Err(ProviderError::Unavailable(anyhow::anyhow!("OIDC provider without metadata")))
            }
        }
    }

    async fn client(&self, redirect_uri: &str) -> Result<Client, ProviderError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| ProviderError::Misconfigured(format!("redirect URI does not parse: {e}")))?;
        let (auth_url, token_url, auth_type) = match (&self.oidc, &self.settings.kind) {
            (Some(oidc), _) => {
                let meta = oidc.metadata(&self.http).await?;
                let auth_type = if meta.prefers_post_auth() { AuthType::RequestBody } else { AuthType::BasicAuth };
                (meta.authorization_endpoint.clone(), meta.token_endpoint.clone(), auth_type)
            }
            (None, ProviderKind::GitHub { authorize_url, token_url, .. }) => (
                authorize_url.clone(),
                token_url.clone(),
                // GitHub documents client_id and client_secret as form parameters.
                AuthType::RequestBody,
            ),
            (None, ProviderKind::Oidc { .. }) => {
                return Err(ProviderError::Misconfigured("OIDC metadata missing".into()));
            }
        };
        let auth_url = AuthUrl::new(auth_url).map_err(ProviderError::unavailable)?;
        let token_url = TokenUrl::new(token_url).map_err(ProviderError::unavailable)?;
        Ok(oauth2::Client::new(ClientId::new(self.settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.settings.client_secret.expose_secret().to_owned()))
            .set_auth_uri(auth_url)
            .set_token_uri(token_url)
            .set_auth_type(auth_type)
            .set_redirect_uri(redirect))
    }

    fn tokens(
        &self,
        response: CodeTokenResponse,
        previous_refresh: Option<SecretString>,
        now: DateTime<Utc>,
    ) -> ProviderTokens {
        let scopes = response
            .scopes()
            .map_or_else(|| self.settings.scopes.clone(), |s| s.iter().map(|s| s.to_string()).collect());
        ProviderTokens {
            access_token: SecretString::from(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().clone()))
                .or(previous_refresh),
            id_token: response.extra_fields().id_token.clone().map(SecretString::from),
            expires_at: response.expires_in().and_then(|d| TimeDelta::from_std(d).ok()).map(|d| now + d),
            scopes,
        }
    }
}

/// Sorts a token endpoint failure. The oauth2 crate's Parse error carries the response body,
/// which may hold a token: it is never logged.
fn token_error(err: RequestTokenError<TokenHttpError, StandardErrorResponse<BasicErrorResponseType>>) -> ProviderError {
    match err {
        RequestTokenError::ServerResponse(e) => grant_error(e.error()),
        RequestTokenError::Request(e) => ProviderError::Unavailable(anyhow::Error::new(e)),
        // GitHub answers 200 with an `error` field; anything else unparsable is a broken
        // provider.
        RequestTokenError::Parse(_, body) => {
            match serde_json::from_slice::<StandardErrorResponse<BasicErrorResponseType>>(&body) {
                Ok(e) => grant_error(e.error()),
                Err(_) => ProviderError::Unavailable(anyhow::anyhow!("token endpoint sent an unexpected response")),
            }
        }
        RequestTokenError::Other(why) => ProviderError::Unavailable(anyhow::anyhow!("token endpoint: {why}")),
    }
}

fn grant_error(code: &BasicErrorResponseType) -> ProviderError {
    match code {
        BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
            ProviderError::Misconfigured(code.to_string())
        }
        // RFC 6749 §4.1.2.1: the provider is down or overloaded, not refusing the code.
        BasicErrorResponseType::Extension(e) if e == "temporarily_unavailable" || e == "server_error" => {
            ProviderError::Unavailable(anyhow::anyhow!("token endpoint answered {e}"))
        }
        other => ProviderError::Rejected(other.to_string()),
    }
}

/// A token request that did not get a usable answer.
#[derive(Debug, thiserror::Error)]
enum TokenHttpError {
    /// The request failed on the way.
    #[error(transparent)]
    Http(#[from] oauth2::HttpClientError<reqwest::Error>),
    /// The provider answered 5xx or 429: down or overloaded, whatever the body says.
    #[error("token endpoint answered HTTP {status}{}", retry_after.as_deref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default())]
    Unavailable { status: u16, retry_after: Option<String> },
}

/// The HTTP client for token requests: [`token_request`] for oauth2.
struct TokenClient(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for TokenClient {
    type Error = TokenHttpError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, TokenHttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(token_request(&self.0, request))
    }
}

/// Sends a token request; a 5xx or 429 answer is the provider being unavailable, read from the
/// HTTP status before any error body (a 503 may carry an OAuth error that looks like a refusal).
async fn token_request(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TokenHttpError> {
    let response = oauth2::AsyncHttpClient::call(http, request).await?;
    let status = response.status();
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        let retry_after =
            response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        return Err(TokenHttpError::Unavailable { status: status.as_u16(), retry_after });
    }
    Ok(response)
}
