//! TLS for the gRPC port with rustls: certificate and key from PEM files, optional mutual TLS
//! against a client CA, and reloading when the files change, without a restart.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::{ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::net::Conn;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificates live and whether clients must present one.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// With a client CA: refuse clients without a certificate (otherwise they may connect
    /// without one, and only certificate-authenticated calls get service identity).
    pub client_cert_required: bool,
}

/// Builds a server config from the files, for HTTP/2 only.
fn load(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .with_context(|| format!("reading {}", settings.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", settings.cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&settings.key).with_context(|| format!("reading {}", settings.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(cert?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.client_cert_required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS acceptor whose configuration is swapped when the files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
}

impl ReloadingTls {
    /// Loads the files once; fails if they are missing or invalid.
    pub fn new(settings: TlsSettings) -> anyhow::Result<Arc<Self>> {
        let config = load(&settings)?;
        Ok(Arc::new(Self { settings, config: ArcSwap::from_pointee(config) }))
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        let files: Vec<&Path> =
            [Some(self.settings.cert.as_path()), Some(self.settings.key.as_path()), self.settings.client_ca.as_deref()]
                .into_iter()
                .flatten()
                .collect();
        files.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// Polls the files every `every` and reloads on change; a broken new file keeps the old
    /// configuration in service. Runs until aborted.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut last = self.stamp();
        loop {
            tokio::time::sleep(every).await;
            let now = self.stamp();
            if now == last {
                continue;
            }
            match load(&self.settings) {
                Ok(config) => {
                    self.config.store(Arc::new(config));
                    last = now;
                    tracing::info!("TLS certificates reloaded");
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "TLS files changed but do not load; keeping the old ones")
                }
            }
        }
    }

    /// Completes TLS handshakes on accepted connections concurrently; a failed handshake
    /// drops that connection only.
    pub fn incoming(
        self: Arc<Self>,
        mut conns: ReceiverStream<io::Result<Conn>>,
    ) -> ReceiverStream<io::Result<TlsStream<Conn>>> {
        use tokio_stream::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(conn) = conns.next().await {
                let Ok(conn) = conn else { continue };
                if tx.is_closed() {
                    return;
                }
                let peer = conn.connect_info().remote_addr;
                let acceptor = TlsAcceptor::from(self.config.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(?peer, %error, "TLS handshake refused"),
                        Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// The names a client certificate vouches for: its subject common name and its DNS and URI
/// subject alternative names (e.g. a SPIFFE id).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::URI(u) => names.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    names
}
