//! Listening, the server secret, transport limits, shutdown and logs.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use ipnet::IpNet;
use secrecy::SecretString;

use super::{Environment, LogFormat, parse_secret};

/// Listening, the server secret, transport limits, shutdown and logs.
#[derive(Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Development or production mode.
    #[arg(long = "env", env = "GATEHOUSE_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,

    /// Address the gRPC server listens on.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP side port: /.well-known/jwks.json,
    /// /.well-known/openid-configuration and /metrics.
    #[arg(long, env = "GATEHOUSE_HTTP_LISTEN", default_value = "127.0.0.1:50052")]
    pub http_listen: SocketAddr,

    /// Folder for the SQLite database and the development secret.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Server secret (at least 32 bytes) keying token hashes. Prefer --secret-file.
    #[arg(long, env = "GATEHOUSE_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Option<SecretString>,

    /// File holding the server secret.
    #[arg(long, env = "GATEHOUSE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// Files holding earlier server secrets: provider tokens encrypted under them stay
    /// readable after the secret is rotated (comma-separated).
    #[arg(long, env = "GATEHOUSE_PREVIOUS_SECRET_FILES", value_delimiter = ',')]
    pub previous_secret_files: Vec<PathBuf>,

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

    /// How often the database is checked for the health service.
    #[arg(long, env = "GATEHOUSE_HEALTH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How long, within the grace period, the server keeps accepting calls after a stop signal
    /// while health answers NOT_SERVING, so load balancers move traffic away before the port
    /// closes. Open `Health.Watch` and `WatchRevocations` streams end when it starts.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_DRAIN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub shutdown_drain: Duration,

    /// How long audit events are kept.
    #[arg(long, env = "GATEHOUSE_AUDIT_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// Log format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info,tonic=warn,h2=warn,sqlx=warn")]
    pub log_filter: String,

    /// OTLP/gRPC collector for traces; unset means no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}
