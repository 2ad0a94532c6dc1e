//! Configuration from command-line flags and environment variables (`gatehouse --help`).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::{
    domain::{keys::SigningAlgorithm, limits::Rate},
    idp::provider::{ProviderKind, ProviderSettings},
    mail::SmtpTls,
    storage::DbOptions,
    tls::TlsSettings,
};

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
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve,
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

/// Every setting; each flag also reads the environment variable shown in `--help`.
#[derive(Clone, Args)]
pub struct Config {
    /// Development or production mode.
    #[arg(long = "env", env = "GATEHOUSE_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,

    /// Address the gRPC server listens on.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database URL: sqlite://path/to/file.db or postgres://user@host/db?sslmode=verify-full.
    /// Its password (user:password@ or ?password=) never reaches a log; production warns about
    /// a PostgreSQL connection that is neither TLS (sslmode=require, verify-ca, verify-full)
    /// nor loopback [default: sqlite://<data-dir>/gatehouse.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder for the SQLite database and the development secret.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Server secret (at least 32 bytes) keying token hashes. Prefer --secret-file.
    #[arg(long, env = "GATEHOUSE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Option<SecretString>,

    /// File holding the server secret.
    #[arg(long, env = "GATEHOUSE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// Absolute session lifetime.
    #[arg(long, env = "GATEHOUSE_SESSION_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// A session unused for this long ends.
    #[arg(long, env = "GATEHOUSE_SESSION_IDLE_TIMEOUT", default_value = "7days", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,

    /// How often GetSession may write a session's last_active_at.
    #[arg(long, env = "GATEHOUSE_SESSION_REFRESH_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub session_refresh_interval: Duration,

    /// How often expired sessions are deleted.
    #[arg(long, env = "GATEHOUSE_SESSION_PRUNE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub session_prune_interval: Duration,

    /// Minimum password length in characters (ASVS: 8; NIST 800-63B-4 asks 15 when the password
    /// is the only factor).
    #[arg(long, env = "GATEHOUSE_PASSWORD_MIN_LENGTH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub password_min_length: u16,

    /// A Have I Been Pwned-style range API (such as https://api.pwnedpasswords.com/) against
    /// which new passwords are checked by k-anonymity: only five hex digits of the password's
    /// SHA-1 are sent. Unset (the default) means no check.
    #[arg(long, env = "GATEHOUSE_BREACHED_PASSWORDS_API")]
    pub breached_passwords_api: Option<String>,

    /// Bound on one breached-password lookup. A lookup that fails or takes longer accepts the
    /// password unchecked (fail open), with a log line and a metric.
    #[arg(long, env = "GATEHOUSE_BREACHED_PASSWORDS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub breached_passwords_timeout: Duration,

    /// Argon2id memory cost in KiB.
    #[arg(long, env = "GATEHOUSE_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations.
    #[arg(long, env = "GATEHOUSE_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Argon2id parallelism.
    #[arg(long, env = "GATEHOUSE_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once [default: number of CPUs].
    #[arg(long, env = "GATEHOUSE_HASH_THREADS")]
    pub hash_threads: Option<usize>,

    /// Password checks allowed to wait for a hashing thread; beyond it, RESOURCE_EXHAUSTED at
    /// once [default: as many as the threads hash in half of GATEHOUSE_REQUEST_TIMEOUT, at the
    /// rate measured at start (at least one per thread, at most 4096)].
    #[arg(long, env = "GATEHOUSE_HASH_QUEUE_LIMIT")]
    pub hash_queue_limit: Option<usize>,

    /// Serve gRPC reflection [default: on in development, off in production].
    #[arg(long, env = "GATEHOUSE_REFLECTION")]
    pub reflection: Option<bool>,

    /// Peers allowed to forward the end user's address (x-forwarded-for) and agent
    /// (x-forwarded-user-agent), as comma-separated IPs or CIDR ranges. Behind a sidecar every
    /// caller arrives from loopback, so trusting loopback believes any caller's
    /// x-forwarded-for (a warning at start says so; see the README).
    #[arg(long, env = "GATEHOUSE_TRUSTED_PROXIES", value_delimiter = ',', default_value = "127.0.0.0/8,::1/128")]
    pub trusted_proxies: Vec<IpNet>,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "GATEHOUSE_MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Longest time a request may run, whatever deadline the client sent.
    #[arg(long, env = "GATEHOUSE_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Most connections open at once on each port (gRPC and the HTTP side port). At the cap
    /// new connections wait in the kernel's backlog and established ones keep being served.
    /// Default: half of the open-file limit less 128 (for 1024 files, 448).
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// A connection without a call in progress (gRPC) or without a byte from the peer (HTTP
    /// side port) for this long is closed; clients reconnect when they next call.
    #[arg(long, env = "GATEHOUSE_CONNECTION_IDLE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub connection_idle_timeout: Duration,

    /// Most calls in progress at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS);
    /// a client asking for more waits for a stream to end.
    #[arg(long, env = "GATEHOUSE_MAX_STREAMS_PER_CONNECTION", default_value_t = 100)]
    pub max_streams_per_connection: u32,

    /// Interval of HTTP/2 keepalive pings; a peer that does not answer one within 10 s is
    /// dropped with its streams.
    #[arg(long, env = "GATEHOUSE_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// Largest number of pooled database connections.
    #[arg(long, env = "GATEHOUSE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a query waits for a database connection before failing with UNAVAILABLE.
    #[arg(long, env = "GATEHOUSE_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// How often the database is checked for the health service.
    #[arg(long, env = "GATEHOUSE_HEALTH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// For an account without a password (created through a provider), a sign-in at most this
    /// old stands in for the password that DeleteAccount and RequestEmailChange re-check.
    #[arg(long, env = "GATEHOUSE_REAUTH_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reauth_max_age: Duration,

    /// How long, within the grace period, the server keeps accepting calls after a stop signal
    /// while health answers NOT_SERVING, so load balancers move traffic away before the port
    /// closes. Open `Health.Watch` and `WatchRevocations` streams end when it starts.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_DRAIN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub shutdown_drain: Duration,

    /// Refuse sign-in until the email address is verified; sign-up then returns no session and
    /// answers a duplicate address exactly like a new one.
    #[arg(long, env = "GATEHOUSE_REQUIRE_EMAIL_VERIFICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_email_verification: bool,

    /// Base URL of the front end; mail links are <url>/verify-email?token=… and
    /// <url>/reset-password?token=….
    #[arg(long, env = "GATEHOUSE_FRONTEND_URL", default_value = "http://localhost:3000")]
    pub frontend_url: String,

    /// Lifetime of verification and email-change links.
    #[arg(long, env = "GATEHOUSE_VERIFICATION_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub verification_ttl: Duration,

    /// Lifetime of password-reset links.
    #[arg(long, env = "GATEHOUSE_RESET_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub reset_ttl: Duration,

    /// Sender of every message.
    #[arg(long, env = "GATEHOUSE_MAIL_FROM", default_value = "Gatehouse <no-reply@localhost>")]
    pub mail_from: String,

    /// SMTP relay host; unset means the development outbox (<data-dir>/outbox/*.eml).
    #[arg(long, env = "GATEHOUSE_SMTP_HOST")]
    pub smtp_host: Option<String>,

    /// SMTP relay port.
    #[arg(long, env = "GATEHOUSE_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,

    /// SMTP transport security.
    #[arg(long, env = "GATEHOUSE_SMTP_TLS", value_enum, default_value_t = SmtpTls::Starttls)]
    pub smtp_tls: SmtpTls,

    /// PEM bundle of the CA certificates that sign the relay's certificate (a private CA). When
    /// set, the relay must chain to one of these, for STARTTLS and implicit TLS alike, and the
    /// public roots are not consulted.
    #[arg(long, env = "GATEHOUSE_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// SMTP login.
    #[arg(long, env = "GATEHOUSE_SMTP_USERNAME")]
    pub smtp_username: Option<String>,

    /// SMTP password. Prefer --smtp-password-file.
    #[arg(long, env = "GATEHOUSE_SMTP_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub smtp_password: Option<SecretString>,

    /// File holding the SMTP password.
    #[arg(long, env = "GATEHOUSE_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,

    /// Bound on each SMTP step: connecting, the TLS handshake, the greeting, each command's reply
    /// and the message data (a whole delivery at most 12 times this). A relay that does not
    /// answer in time fails the attempt, which is retried with backoff.
    #[arg(long, env = "GATEHOUSE_SMTP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub smtp_timeout: Duration,

    /// Delivery attempts per message before giving up.
    #[arg(long, env = "GATEHOUSE_MAIL_ATTEMPTS", default_value_t = 5)]
    pub mail_attempts: u32,

    /// Wait before the first retry; doubles each time.
    #[arg(long, env = "GATEHOUSE_MAIL_RETRY_BACKOFF", default_value = "2s", value_parser = humantime::parse_duration)]
    pub mail_retry_backoff: Duration,

    /// Folder of mail templates (<name>.txt and <name>.html) replacing the built-in ones.
    #[arg(long, env = "GATEHOUSE_MAIL_TEMPLATES_DIR")]
    pub mail_templates_dir: Option<PathBuf>,

    /// Enforce rate limits.
    #[arg(long, env = "GATEHOUSE_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// SignIn attempts per email and client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_ACCOUNT", default_value = "5/1m")]
    pub rate_sign_in_per_account: Rate,

    /// SignIn attempts per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_IP", default_value = "30/1m")]
    pub rate_sign_in_per_ip: Rate,

    /// SignIn attempts per email from any IP (and password re-checks of that account): holds
    /// off a guesser spread over many addresses. The owner is held off too while it applies.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_EMAIL", default_value = "20/15m")]
    pub rate_sign_in_per_email: Rate,

    /// SignIn attempts in all, whatever the email and IP: a ceiling for a guesser that varies
    /// both. Size it well above the peak of real traffic (per replica set, with Redis).
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_GLOBAL", default_value = "3000/1m")]
    pub rate_sign_in_global: Rate,

    /// StartOAuth calls per client IP (each stores a pending sign-in).
    #[arg(long, env = "GATEHOUSE_RATE_OAUTH_START_PER_IP", default_value = "30/1m")]
    pub rate_oauth_start_per_ip: Rate,

    /// IPv6 clients are counted by network for every per-IP limit: the first this many bits
    /// (64: one /64, what a subscriber or a cloud host usually holds). 128 keys each address.
    #[arg(long, env = "GATEHOUSE_RATE_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub rate_ipv6_prefix: u8,

    /// SignUp calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_UP_PER_IP", default_value = "10/1h")]
    pub rate_sign_up_per_ip: Rate,

    /// RequestPasswordReset calls per email.
    #[arg(long, env = "GATEHOUSE_RATE_RESET_PER_EMAIL", default_value = "3/1h")]
    pub rate_reset_per_email: Rate,

    /// RequestPasswordReset calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_RESET_PER_IP", default_value = "20/1h")]
    pub rate_reset_per_ip: Rate,

    /// SendVerificationEmail and RequestEmailChange calls per account.
    #[arg(long, env = "GATEHOUSE_RATE_VERIFICATION_PER_ACCOUNT", default_value = "3/1h")]
    pub rate_verification_per_account: Rate,

    /// VerifyEmail and ResetPassword calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_REDEEM_PER_IP", default_value = "20/1m")]
    pub rate_redeem_per_ip: Rate,

    /// Redis for rate-limit counters shared by every replica; unset keeps them in-process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of Gatehouse's Redis keys.
    #[arg(long, env = "GATEHOUSE_REDIS_PREFIX", default_value = "gatehouse")]
    pub redis_prefix: String,

    /// Failed sign-ins in a row before an account is slowed down.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,

    /// First lock after the threshold; doubles with each further failure.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_BASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lockout_base: Duration,

    /// Longest lock.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_MAX", default_value = "15m", value_parser = humantime::parse_duration)]
    pub lockout_max: Duration,

    /// How long audit events are kept.
    #[arg(long, env = "GATEHOUSE_AUDIT_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// Address of the plain-HTTP side port: /.well-known/jwks.json,
    /// /.well-known/openid-configuration and /metrics.
    #[arg(long, env = "GATEHOUSE_HTTP_LISTEN", default_value = "127.0.0.1:50052")]
    pub http_listen: SocketAddr,

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

    /// TLS certificate chain (PEM) for the gRPC port; with --tls-key, turns TLS on.
    #[arg(long, env = "GATEHOUSE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "GATEHOUSE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// CA (PEM) that client certificates must chain to: turns on mutual TLS.
    #[arg(long, env = "GATEHOUSE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Under mutual TLS, refuse clients without a certificate.
    #[arg(long, env = "GATEHOUSE_TLS_CLIENT_CERT_REQUIRED", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_client_cert_required: bool,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "GATEHOUSE_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// In production, serve plaintext gRPC anyway: only on a loopback address, behind a mesh
    /// sidecar that terminates TLS.
    #[arg(long, env = "GATEHOUSE_ALLOW_PLAINTEXT", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_plaintext: bool,

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

    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,tonic=warn,h2=warn,sqlx=warn")]
    pub log_filter: String,

    /// OTLP/gRPC collector for traces; unset means no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Files holding earlier server secrets: provider tokens encrypted under them stay
    /// readable after the secret is rotated (comma-separated).
    #[arg(long, env = "GATEHOUSE_PREVIOUS_SECRET_FILES", value_delimiter = ',')]
    pub previous_secret_files: Vec<PathBuf>,

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

fn parse_secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw.to_owned()))
}

// Manual, so that the database URL's password and the secret never reach a log.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("environment", &self.environment)
            .field("listen", &self.listen)
            .field("database_url", &crate::redact::url(&self.database_url()))
            .field("data_dir", &self.data_dir)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("secret_file", &self.secret_file)
            .field("session_ttl", &self.session_ttl)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("reflection", &self.reflection_enabled())
            .field("smtp_host", &self.smtp_host)
            .field("smtp_password", &self.smtp_password.as_ref().map(|_| "[redacted]"))
            .field("redis_url", &self.redis_url.as_deref().map(crate::redact::url))
            .field("google_client_id", &self.google.client_id)
            .field("github_client_id", &self.github.client_id)
            .field("oidc_providers", &self.oidc_providers)
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

    /// The configured identity providers: Google and GitHub when their client ids are set,
    /// then each generic OIDC provider (from `oidc`, or else the environment).
    pub fn oauth_providers(&self) -> anyhow::Result<Vec<ProviderSettings>> {
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

    /// Earlier server secrets, for reading what was encrypted before a rotation.
    pub fn load_previous_secrets(&self) -> anyhow::Result<Vec<SecretSlice<u8>>> {
        self.previous_secret_files
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
        self.environment == Environment::Production
    }

    /// Whether reflection is served.
    pub fn reflection_enabled(&self) -> bool {
        self.reflection.unwrap_or(!self.is_production())
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("gatehouse.db").display()))
    }

    /// Database connection settings.
    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            url: self.database_url(),
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: self.db_acquire_timeout,
        }
    }

    /// The server secret: given, read from a file, or (development only) generated once and
    /// kept in the data folder.
    pub fn load_secret(&self) -> anyhow::Result<SecretSlice<u8>> {
        let given = match (&self.secret, &self.secret_file) {
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
        self.issuer.clone().unwrap_or_else(|| format!("http://{}", self.http_listen)).trim_end_matches('/').to_owned()
    }

    /// TLS settings, when a certificate and key are configured.
    pub fn tls(&self) -> anyhow::Result<Option<TlsSettings>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                client_cert_required: self.tls_client_cert_required,
            })),
            (None, None) if self.tls_client_ca.is_some() => {
                bail!("GATEHOUSE_TLS_CLIENT_CA needs GATEHOUSE_TLS_CERT and GATEHOUSE_TLS_KEY")
            }
            (None, None) => {
                if self.is_production() && !(self.allow_plaintext && self.listen.ip().is_loopback()) {
                    bail!(
                        "production mode refuses plaintext gRPC: set GATEHOUSE_TLS_CERT and GATEHOUSE_TLS_KEY, or, behind a \
                         mesh sidecar, listen on loopback with GATEHOUSE_ALLOW_PLAINTEXT=true"
                    );
                }
                Ok(None)
            }
            _ => bail!("set both GATEHOUSE_TLS_CERT and GATEHOUSE_TLS_KEY"),
        }
    }

    /// The SMTP password, from the flag or its file.
    pub fn smtp_password(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.smtp_password, &self.smtp_password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(path)) => Ok(Some(SecretString::from(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the SMTP password file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ))),
            (None, None) => Ok(None),
        }
    }

    fn development_secret(&self) -> anyhow::Result<SecretSlice<u8>> {
        let path = self.data_dir.join("secret");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let bytes = existing.trim().as_bytes().to_vec();
            if bytes.len() >= MIN_SECRET_BYTES {
                return Ok(SecretSlice::from(bytes));
            }
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data folder {}", self.data_dir.display()))?;
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
        config.environment = Environment::Production;
        assert!(config.load_secret().is_err());
        config.secret = Some(SecretString::from("short".to_owned()));
        assert!(config.load_secret().is_err());
        config.secret = Some(SecretString::from("x".repeat(32)));
        assert!(config.load_secret().is_ok());
        assert!(!config.reflection_enabled());
    }
}
