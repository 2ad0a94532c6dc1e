//! Sign-in with Google, GitHub and generic OpenID Connect providers.

use std::{fmt, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use secrecy::SecretString;

use super::{delta, parse_secret};
use crate::{
    domain::oauth::OAuthConfig,
    idp::provider::{ProviderKind, ProviderSettings},
};

/// Sign-in with Google, GitHub and generic OpenID Connect providers.
#[derive(Clone, Args)]
#[command(next_help_heading = "Identity providers")]
pub struct OAuthArgs {
    /// Link a provider identity to an existing user when the provider and Gatehouse both
    /// say the email is verified.
    #[arg(long, env = "GATEHOUSE_OAUTH_LINK_BY_VERIFIED_EMAIL", default_value_t = true, action = clap::ArgAction::Set)]
    pub oauth_link_by_verified_email: bool,

    /// How long a started provider sign-in may take.
    #[arg(long, env = "GATEHOUSE_OAUTH_STATE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub oauth_state_ttl: Duration,

    /// Bound on every call to an identity provider.
    #[arg(long, env = "GATEHOUSE_OAUTH_HTTP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub oauth_http_timeout: Duration,

    /// Google.
    #[command(flatten)]
    pub google: GoogleConfig,

    /// GitHub.
    #[command(flatten)]
    pub github: GitHubConfig,

    /// Names of generic OpenID Connect providers (comma-separated); each is configured by
    /// GATEHOUSE_OIDC_<NAME>_ISSUER, _CLIENT_ID, _CLIENT_SECRET or _CLIENT_SECRET_FILE,
    /// _REDIRECT_URIS, and optionally _SCOPES and _ALGORITHMS.
    #[arg(long, env = "GATEHOUSE_OIDC_PROVIDERS", value_delimiter = ',')]
    pub oidc_providers: Vec<String>,

    /// Generic OIDC providers given directly rather than through the environment (tests).
    #[arg(skip)]
    pub oidc: Vec<OidcProviderConfig>,
}

impl OAuthArgs {
    /// The rules for provider sign-in; `require_email_verification` is the password rule's.
    pub fn oauth_config(&self, require_email_verification: bool) -> anyhow::Result<OAuthConfig> {
        Ok(OAuthConfig {
            link_by_verified_email: self.oauth_link_by_verified_email,
            state_ttl: delta(self.oauth_state_ttl)?,
            require_email_verification,
        })
    }

    /// The configured identity providers: Google and GitHub when their client ids are set,
    /// then each generic OIDC provider (from `oidc`, or else the environment).
    pub fn providers(&self) -> anyhow::Result<Vec<ProviderSettings>> {
        let mut providers = Vec::new();
        let g = &self.google;
        if let Some(client_id) = &g.client_id {
            let default_issuer = g.issuer == GOOGLE_ISSUER;
            providers.push(ProviderSettings {
                name: "google".into(),
                client_id: client_id.clone(),
                client_secret: load_client_secret(
                    g.client_secret.as_ref(),
                    g.client_secret_file.as_deref(),
                    "GATEHOUSE_GOOGLE_CLIENT_SECRET or GATEHOUSE_GOOGLE_CLIENT_SECRET_FILE",
                )?,
                redirect_uris: g.redirect_uris.clone(),
                scopes: g.scopes.clone(),
                kind: ProviderKind::Oidc {
                    issuer: g.issuer.clone(),
                    // Google's ID tokens may carry the issuer without its scheme.
                    extra_issuers: if default_issuer { vec!["accounts.google.com".into()] } else { Vec::new() },
                    algorithms: vec![jsonwebtoken::Algorithm::RS256],
                    // Without it Google issues no refresh token.
                    extra_params: vec![("access_type".into(), "offline".into())],
                },
            });
        }
        let gh = &self.github;
        if let Some(client_id) = &gh.client_id {
            providers.push(ProviderSettings {
                name: "github".into(),
                client_id: client_id.clone(),
                client_secret: load_client_secret(
                    gh.client_secret.as_ref(),
                    gh.client_secret_file.as_deref(),
                    "GATEHOUSE_GITHUB_CLIENT_SECRET or GATEHOUSE_GITHUB_CLIENT_SECRET_FILE",
                )?,
                redirect_uris: gh.redirect_uris.clone(),
                scopes: gh.scopes.clone(),
                kind: ProviderKind::GitHub {
                    authorize_url: gh.authorize_url.clone(),
                    token_url: gh.token_url.clone(),
                    api_url: gh.api_url.clone(),
                },
            });
        }
        let mut generic = self.oidc.clone();
        for name in self.oidc_providers.iter().filter(|n| !n.trim().is_empty()) {
            if !generic.iter().any(|p| p.name == name.trim().to_lowercase()) {
                generic.push(OidcProviderConfig::from_vars(name, |k| std::env::var(k).ok())?);
            }
        }
        for p in generic {
            let algorithms = p
                .algorithms
                .iter()
                .map(|a| {
                    a.parse::<jsonwebtoken::Algorithm>()
                        .map_err(|_| anyhow::anyhow!("OIDC provider {}: unknown algorithm {a:?}", p.name))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                algorithms.iter().all(|a| !matches!(
                    a,
                    jsonwebtoken::Algorithm::HS256 | jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512
                )),
                "OIDC provider {}: only asymmetric ID token algorithms are accepted",
                p.name
            );
            providers.push(ProviderSettings {
                name: p.name,
                client_id: p.client_id,
                client_secret: p.client_secret,
                redirect_uris: p.redirect_uris,
                scopes: p.scopes,
                kind: ProviderKind::Oidc {
                    issuer: p.issuer,
                    extra_issuers: Vec::new(),
                    algorithms,
                    extra_params: Vec::new(),
                },
            });
        }
        let mut names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        anyhow::ensure!(names.windows(2).all(|w| w[0] != w[1]), "provider names must be unique: {names:?}");
        // Mix-up defence (RFC 9700 §4.4): the redirect URI a code arrives on must name exactly
        // one provider, or a code from one could be spent against another.
        let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for p in &providers {
            for uri in &p.redirect_uris {
                if let Some(other) = seen.insert(uri.as_str(), p.name.as_str()) {
                    anyhow::bail!(
                        "redirect URI {uri} is configured for both {other} and {}: give each provider its own",
                        p.name
                    );
                }
            }
        }
        Ok(providers)
    }
}

/// Sign in with Google (OpenID Connect), enabled by a client id.
#[derive(Debug, Clone, Args)]
pub struct GoogleConfig {
    /// OAuth client id; unset disables Google.
    #[arg(long = "google-client-id", id = "google_client_id", env = "GATEHOUSE_GOOGLE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret. Prefer --google-client-secret-file.
    #[arg(long = "google-client-secret", id = "google_client_secret", env = "GATEHOUSE_GOOGLE_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub client_secret: Option<SecretString>,
    /// File holding the OAuth client secret.
    #[arg(
        long = "google-client-secret-file",
        id = "google_client_secret_file",
        env = "GATEHOUSE_GOOGLE_CLIENT_SECRET_FILE"
    )]
    pub client_secret_file: Option<PathBuf>,
    /// Redirect URIs accepted, compared exactly (comma-separated).
    #[arg(
        long = "google-redirect-uris",
        id = "google_redirect_uris",
        env = "GATEHOUSE_GOOGLE_REDIRECT_URIS",
        value_delimiter = ','
    )]
    pub redirect_uris: Vec<String>,
    /// Issuer; discovery is read from <issuer>/.well-known/openid-configuration.
    #[arg(
        long = "google-issuer", id = "google_issuer",
        env = "GATEHOUSE_GOOGLE_ISSUER",
        default_value = GOOGLE_ISSUER
    )]
    pub issuer: String,
    /// Scopes requested (comma-separated).
    #[arg(
        long = "google-scopes",
        id = "google_scopes",
        env = "GATEHOUSE_GOOGLE_SCOPES",
        value_delimiter = ',',
        default_value = "openid,email,profile"
    )]
    pub scopes: Vec<String>,
}

/// Sign in with GitHub (OAuth 2.0), enabled by a client id.
#[derive(Debug, Clone, Args)]
pub struct GitHubConfig {
    /// OAuth app client id; unset disables GitHub.
    #[arg(long = "github-client-id", id = "github_client_id", env = "GATEHOUSE_GITHUB_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth app client secret. Prefer --github-client-secret-file.
    #[arg(long = "github-client-secret", id = "github_client_secret", env = "GATEHOUSE_GITHUB_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub client_secret: Option<SecretString>,
    /// File holding the OAuth app client secret.
    #[arg(
        long = "github-client-secret-file",
        id = "github_client_secret_file",
        env = "GATEHOUSE_GITHUB_CLIENT_SECRET_FILE"
    )]
    pub client_secret_file: Option<PathBuf>,
    /// Redirect URIs accepted, compared exactly (comma-separated).
    #[arg(
        long = "github-redirect-uris",
        id = "github_redirect_uris",
        env = "GATEHOUSE_GITHUB_REDIRECT_URIS",
        value_delimiter = ','
    )]
    pub redirect_uris: Vec<String>,
    /// Authorization endpoint.
    #[arg(
        long = "github-authorize-url",
        id = "github_authorize_url",
        env = "GATEHOUSE_GITHUB_AUTHORIZE_URL",
        default_value = "https://github.com/login/oauth/authorize"
    )]
    pub authorize_url: String,
    /// Token endpoint.
    #[arg(
        long = "github-token-url",
        id = "github_token_url",
        env = "GATEHOUSE_GITHUB_TOKEN_URL",
        default_value = "https://github.com/login/oauth/access_token"
    )]
    pub token_url: String,
    /// REST API base URL.
    #[arg(
        long = "github-api-url",
        id = "github_api_url",
        env = "GATEHOUSE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub api_url: String,
    /// Scopes requested (comma-separated).
    #[arg(
        long = "github-scopes",
        id = "github_scopes",
        env = "GATEHOUSE_GITHUB_SCOPES",
        value_delimiter = ',',
        default_value = "read:user,user:email"
    )]
    pub scopes: Vec<String>,
}

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// A generic OpenID Connect provider.
#[derive(Clone)]
pub struct OidcProviderConfig {
    /// Name used in the API (lower-case letters, digits, `-`, `_`).
    pub name: String,
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretString,
    /// Redirect URIs accepted, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// ID token algorithms accepted (e.g. RS256, ES256).
    pub algorithms: Vec<String>,
}

// The client secret never reaches a log.
impl fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcProviderConfig {
    /// Reads provider `name` from GATEHOUSE_OIDC_<NAME>_* variables through `var`.
    pub fn from_vars(name: &str, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let name = name.trim().to_lowercase();
        anyhow::ensure!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
            "OIDC provider name {name:?} must be lower-case letters, digits, '-' or '_'"
        );
        let prefix = format!("GATEHOUSE_OIDC_{}_", name.to_uppercase().replace('-', "_"));
        let get = |key: &str| var(&format!("{prefix}{key}")).filter(|v| !v.trim().is_empty());
        let need = |key: &str| get(key).with_context(|| format!("OIDC provider {name}: set {prefix}{key}"));
        let list =
            |raw: String| raw.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
        let client_secret = load_client_secret(
            get("CLIENT_SECRET").map(SecretString::from).as_ref(),
            get("CLIENT_SECRET_FILE").map(PathBuf::from).as_deref(),
            &format!("{prefix}CLIENT_SECRET or {prefix}CLIENT_SECRET_FILE"),
        )?;
        Ok(Self {
            issuer: need("ISSUER")?,
            client_id: need("CLIENT_ID")?,
            client_secret,
            redirect_uris: list(need("REDIRECT_URIS")?),
            scopes: list(get("SCOPES").unwrap_or_else(|| "openid,email,profile".into())),
            algorithms: list(get("ALGORITHMS").unwrap_or_else(|| "RS256".into())),
            name,
        })
    }
}

/// A client secret given directly or in a file (trimmed).
fn load_client_secret(
    given: Option<&SecretString>,
    file: Option<&std::path::Path>,
    what: &str,
) -> anyhow::Result<SecretString> {
    match (given, file) {
        (Some(secret), _) => Ok(secret.clone()),
        (None, Some(path)) => Ok(SecretString::from(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the client secret file {}", path.display()))?
                .trim()
                .to_owned(),
        )),
        (None, None) => bail!("a client secret is required: set {what}"),
    }
}
