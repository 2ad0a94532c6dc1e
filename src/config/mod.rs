//! Configuration from command-line flags and environment variables (`gatehouse --help`).

use std::{fmt, time::Duration};

use chrono::TimeDelta;

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::{domain::keys::AccessTokenConfig, idp::provider::ProviderSettings, storage::DbOptions, tls::TlsSettings};

mod database;
mod limits;
mod mail;
mod mesh;
mod oauth;
mod passwords;
mod privacy;
mod server;
mod sessions;
mod tls;

pub use database::{DatabaseArgs, Pooler};
pub use limits::LimitArgs;
pub use mail::MailArgs;
pub use mesh::MeshArgs;
pub use oauth::{GOOGLE_ISSUER, GitHubConfig, GoogleConfig, OAuthArgs, OidcProviderConfig};
pub use passwords::PasswordArgs;
pub use privacy::{PrivacyArgs, RedactionArg};
pub use server::ServerArgs;
pub use sessions::SessionArgs;
pub use tls::TlsArgs;

/// A `std` duration as a `chrono` one, for the domain.
pub(crate) fn delta(d: Duration) -> anyhow::Result<TimeDelta> {
    TimeDelta::from_std(d).context("duration out of range")
}

/// Shortest server secret accepted in production.
pub const MIN_SECRET_BYTES: usize = 32;

/// The `gatehouse` command line.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse: a gRPC identity service")]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve,
    /// Ask a running server's gRPC health service (`grpc.health.v1.Health/Check`) whether it
    /// is SERVING: exit 0 if so, 1 if not or unreachable. The container image's health check.
    Health {
        /// The server to ask, in plaintext [default: http://127.0.0.1:<port of GATEHOUSE_LISTEN>,
        /// or its own address when it listens on a specific one].
        #[arg(long)]
        addr: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage access-token signing keys.
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `gatehouse keys ...`
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum KeysCommand {
    /// Publish a successor signing key; it signs after GATEHOUSE_JWKS_MAX_AGE +
    /// GATEHOUSE_SIGNING_KEY_CHECK_INTERVAL (so run it with the servers' values), and the old one
    /// stays published until its tokens have expired everywhere.
    Rotate,
}

/// Development or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Generated secret, SQLite by default, reflection on.
    Development,
    /// Explicit secret required, reflection off unless enabled.
    Production,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, in groups; each flag also reads the environment variable shown in `--help`.
#[derive(Clone, Args)]
pub struct Config {
    /// Listening, the server secret, transport limits, shutdown and logs.
    #[command(flatten)]
    pub server: ServerArgs,

    /// The database connection.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Session lifetimes, email links and the sign-in lockout.
    #[command(flatten)]
    pub sessions: SessionArgs,

    /// Password rules, the breached-password check and Argon2id.
    #[command(flatten)]
    pub passwords: PasswordArgs,

    /// Outgoing mail: the SMTP relay, retries and templates.
    #[command(flatten)]
    pub mail: MailArgs,

    /// Rate limits and where their counters live.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Access tokens, their signing keys, the revocation feed and service credentials.
    #[command(flatten)]
    pub mesh: MeshArgs,

    /// TLS and mutual TLS on the gRPC port.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Sign-in with Google, GitHub and generic OpenID Connect providers.
    #[command(flatten)]
    pub oauth: OAuthArgs,

    /// Consent purposes and policy version, and how long client data is kept.
    #[command(flatten)]
    pub privacy: PrivacyArgs,
}

pub(crate) fn parse_secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw.to_owned()))
}

// Manual, so that the database URL's password and the secret never reach a log.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("environment", &self.server.environment)
            .field("listen", &self.server.listen)
            .field("database_url", &crate::redact::url(&self.database_url()))
            .field("data_dir", &self.server.data_dir)
            .field("secret", &self.server.secret.as_ref().map(|_| "[redacted]"))
            .field("secret_file", &self.server.secret_file)
            .field("session_ttl", &self.sessions.session_ttl)
            .field("session_idle_timeout", &self.sessions.session_idle_timeout)
            .field("reflection", &self.reflection_enabled())
            .field("smtp_host", &self.mail.smtp_host)
            .field("smtp_password", &self.mail.smtp_password.as_ref().map(|_| "[redacted]"))
            .field("redis_url", &self.limits.redis_url.as_deref().map(crate::redact::url))
            .field("google_client_id", &self.oauth.google.client_id)
            .field("github_client_id", &self.oauth.github.client_id)
            .field("oidc_providers", &self.oauth.oidc_providers)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Parses flags and environment.
    pub fn from_args() -> (Option<Command>, Self) {
        let cli = Cli::parse();
        (cli.command, cli.config)
    }

    /// The built-in defaults, ignoring flags and the `GATEHOUSE_*` environment: what tests
    /// start from, so a developer's shell cannot change a test's configuration.
    pub fn default_for_test() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["gatehouse"]);
        #[allow(clippy::expect_used)]
        Cli::from_arg_matches(&matches).expect("the defaults parse").config
    }

    /// The configured identity providers (see [`OAuthArgs::providers`]).
    pub fn oauth_providers(&self) -> anyhow::Result<Vec<ProviderSettings>> {
        self.oauth.providers()
    }

    /// Earlier server secrets, for reading what was encrypted before a rotation.
    pub fn load_previous_secrets(&self) -> anyhow::Result<Vec<SecretSlice<u8>>> {
        self.server
            .previous_secret_files
            .iter()
            .map(|path| {
                let bytes = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the previous secret {}", path.display()))?
                    .trim()
                    .as_bytes()
                    .to_vec();
                Ok(SecretSlice::from(bytes))
            })
            .collect()
    }

    /// Whether production mode is on.
    pub fn is_production(&self) -> bool {
        self.server.environment == Environment::Production
    }

    /// Whether reflection is served.
    pub fn reflection_enabled(&self) -> bool {
        self.server.reflection.unwrap_or(!self.is_production())
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        self.database.url(&self.server.data_dir)
    }

    /// Database connection settings.
    pub fn db_options(&self) -> DbOptions {
        self.database.options(&self.server.data_dir, self.server.request_timeout)
    }

    /// The server secret: given, read from a file, or (development only) generated once and
    /// kept in the data folder.
    pub fn load_secret(&self) -> anyhow::Result<SecretSlice<u8>> {
        let given = match (&self.server.secret, &self.server.secret_file) {
            (Some(secret), _) => Some(secret.expose_secret().as_bytes().to_vec()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the secret file {}", path.display()))?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            (None, None) => None,
        };
        match given {
            Some(bytes) if bytes.len() >= MIN_SECRET_BYTES => Ok(SecretSlice::from(bytes)),
            Some(_) => bail!("the server secret must be at least {MIN_SECRET_BYTES} bytes"),
            None if self.is_production() => bail!(
                "production mode needs a server secret of at least {MIN_SECRET_BYTES} bytes: \
                 set GATEHOUSE_SECRET_FILE or GATEHOUSE_SECRET"
            ),
            None => self.development_secret(),
        }
    }

    /// The access-token issuer: as configured, or the HTTP side port's address.
    pub fn issuer(&self) -> String {
        self.mesh
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.server.http_listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The access-token settings.
    pub fn access_tokens(&self) -> anyhow::Result<AccessTokenConfig> {
        self.mesh.access_tokens(self.issuer())
    }

    /// TLS settings for the gRPC port, when a certificate and key are configured.
    pub fn tls_settings(&self) -> anyhow::Result<Option<TlsSettings>> {
        self.tls.settings(self.is_production(), self.server.listen)
    }

    fn development_secret(&self) -> anyhow::Result<SecretSlice<u8>> {
        let path = self.server.data_dir.join("secret");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let bytes = existing.trim().as_bytes().to_vec();
            if bytes.len() >= MIN_SECRET_BYTES {
                return Ok(SecretSlice::from(bytes));
            }
        }
        std::fs::create_dir_all(&self.server.data_dir)
            .with_context(|| format!("creating the data folder {}", self.server.data_dir.display()))?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let encoded = URL_SAFE_NO_PAD.encode(random);
        write_private(&path, encoded.as_bytes())
            .with_context(|| format!("writing the development secret {}", path.display()))?;
        tracing::warn!(path = %path.display(), "generated a development secret");
        Ok(SecretSlice::from(encoded.into_bytes()))
    }
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_requires_a_long_secret() {
        let mut config = Config::default_for_test();
        config.server.environment = Environment::Production;
        assert!(config.load_secret().is_err());
        config.server.secret = Some(SecretString::from("short".to_owned()));
        assert!(config.load_secret().is_err());
        config.server.secret = Some(SecretString::from("x".repeat(32)));
        assert!(config.load_secret().is_ok());
        assert!(!config.reflection_enabled());
    }
}
