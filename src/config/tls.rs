//! TLS and mutual TLS on the gRPC port.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::bail;
use clap::Args;

use crate::tls::TlsSettings;

/// TLS and mutual TLS on the gRPC port.
#[derive(Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
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
}

impl TlsArgs {
    /// TLS settings, when a certificate and key are configured. Production refuses plaintext
    /// unless it is allowed and `listen` is loopback (behind a mesh sidecar).
    pub fn settings(&self, production: bool, listen: SocketAddr) -> anyhow::Result<Option<TlsSettings>> {
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
                if production && !(self.allow_plaintext && listen.ip().is_loopback()) {
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
}
