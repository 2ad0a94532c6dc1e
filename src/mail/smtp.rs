//! SMTP delivery through lettre: STARTTLS, implicit TLS or (loopback/tests only) plaintext;
//! the relay's certificate chains to the public roots or to a private CA bundle.
//!
//! lettre's pooled transport bounds only the TCP connect: a relay that accepts the connection
//! and never speaks would hold a delivery forever. So the connection is made here and every
//! read and write on it must make progress within the timeout (greeting, each command and
//! reply, the TLS handshake, the message data); lettre's `AsyncSmtpConnection` speaks SMTP over
//! it. Each message gets its own connection: mail is rare, and a fresh connection never
//! inherits a half-dead one.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use async_trait::async_trait;
use lettre::{
    message::Mailbox,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters},
        extension::ClientId,
    },
};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use secrecy::{ExposeSecret, SecretString};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

use super::{Transport, build_message};
use crate::domain::notify::Mail;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// Upgrade with STARTTLS (usually port 587); refuse the relay if it cannot.
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No encryption: only for a relay on loopback or a test server.
    None,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// PEM bundle of the CAs trusted for the relay in place of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Login, if the relay needs one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<SecretString>,
    /// Bound on each step: connecting, the TLS handshake, and every read and write.
    pub timeout: Duration,
}

/// A whole delivery takes at most this many timeouts, however the relay dribbles its replies.
const MAX_STEPS: u32 = 12;

/// The SMTP transport.
pub struct Smtp {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    from: Mailbox,
}

/// The TLS configuration for the chosen mode.
enum Security {
    Starttls(TlsParameters),
    Implicit(tokio_rustls::TlsConnector, ServerName<'static>),
    None,
}

impl Smtp {
    /// A transport for `settings`, sending as `from`.
    pub fn new(settings: &SmtpSettings, from: &str) -> anyhow::Result<Self> {
        let private_roots = settings.ca_file.as_deref().map(read_ca_file).transpose()?;
        let security = match settings.tls {
            SmtpTls::Starttls => {
                let mut parameters = TlsParameters::builder(settings.host.clone());
                if let Some(roots) = &private_roots {
                    parameters = parameters.certificate_store(CertificateStore::None);
                    for root in roots {
                        parameters = parameters.add_root_certificate(Certificate::from_der(root.to_vec())?);
                    }
                }
                Security::Starttls(parameters.build()?)
            }
            SmtpTls::Tls => {
                let name = ServerName::try_from(settings.host.clone())
                    .with_context(|| format!("GATEHOUSE_SMTP_HOST {} is not a valid TLS server name", settings.host))?;
                let config = client_config(private_roots.as_deref())?;
                Security::Implicit(tokio_rustls::TlsConnector::from(Arc::new(config)), name)
            }
            SmtpTls::None => {
                if settings.ca_file.is_some() {
                    anyhow::bail!("GATEHOUSE_SMTP_CA_FILE is set but GATEHOUSE_SMTP_TLS is none: nothing would use it");
                }
                Security::None
            }
        };
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.expose_secret().to_owned())),
            _ => None,
        };
        Ok(Self {
            host: settings.host.clone(),
            port: settings.port,
            security,
            credentials,
            timeout: settings.timeout,
            hello: ClientId::default(),
            from: from.parse()?,
        })
    }

    /// One delivery over a new connection.
    async fn deliver(&self, envelope: &lettre::address::Envelope, body: &[u8]) -> anyhow::Result<()> {
        let step = self.timeout;
        let tcp = tokio::time::timeout(step, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| anyhow::anyhow!("no TCP connection within {}", humantime::format_duration(step)))?
            .context("connecting")?;
        let _ = tcp.set_nodelay(true);
        let mut conn = match &self.security {
            Security::Implicit(connector, name) => {
                let tls = tokio::time::timeout(step, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| anyhow::anyhow!("no TLS handshake within {}", humantime::format_duration(step)))?
                    .context("TLS handshake")?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Deadline::new(tls, step)), &self.hello)
                    .await
                    .map_err(flat)?
            }
            Security::Starttls(parameters) => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(Deadline::new(tcp, step)), &self.hello)
                        .await
                        .map_err(flat)?;
                if !conn.can_starttls() {
                    conn.abort().await;
                    anyhow::bail!("the relay does not offer STARTTLS (set GATEHOUSE_SMTP_TLS to tls or none)");
                }
                // The handshake reads and writes through the same bounded connection.
                conn.starttls(parameters.clone(), &self.hello).await.map_err(flat)?;
                conn
            }
            Security::None => {
                AsyncSmtpConnection::connect_with_transport(Box::new(Deadline::new(tcp, step)), &self.hello)
                    .await
                    .map_err(flat)?
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(flat)?;
        }
        conn.send(envelope, body).await.map_err(flat)?;
        let _ = conn.quit().await;
        Ok(())
    }
}

/// lettre's errors print their source themselves: keep the text, not the chain, so that a log
/// line (which prints the chain) says it once.
fn flat(error: lettre::transport::smtp::Error) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

/// The certificates of a CA bundle, refused at start if the file holds none (a misnamed file
/// would otherwise fail every delivery, silently, until someone reads the logs).
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading GATEHOUSE_SMTP_CA_FILE {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("GATEHOUSE_SMTP_CA_FILE {} is not a PEM certificate bundle", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("GATEHOUSE_SMTP_CA_FILE {} holds no PEM certificate", path.display());
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .with_context(|| format!("GATEHOUSE_SMTP_CA_FILE {}: a certificate is not a usable CA", path.display()))?;
    }
    Ok(certs)
}

/// rustls with the private roots when given, else the public (webpki) roots, as lettre's
/// STARTTLS uses.
fn client_config(private_roots: Option<&[CertificateDer<'static>]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match private_roots {
        Some(private) => {
            roots.add_parsable_certificates(private.iter().cloned());
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[async_trait]
impl Transport for Smtp {
    async fn send(&self, mail: &Mail) -> anyhow::Result<()> {
        let message = build_message(&self.from, mail)?;
        let body = message.formatted();
        let whole = self.timeout.saturating_mul(MAX_STEPS);
        tokio::time::timeout(whole, self.deliver(message.envelope(), &body))
            .await
            .map_err(|_| anyhow::anyhow!("delivery took longer than {}", humantime::format_duration(whole)))?
            .with_context(|| format!("SMTP relay {}:{}", self.host, self.port))
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

/// A connection on which every read and every write must make progress within `timeout`: a
/// relay that accepts and then says nothing fails the step instead of holding it forever.
struct Deadline<S> {
    inner: S,
    timeout: Duration,
    reading: Option<Pin<Box<Sleep>>>,
    writing: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, reading: None, writing: None }
    }
}

/// Polls the timer of a pending step, starting it on the first wait.
fn expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
    what: &str,
) -> Poll<io::Error> {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => {
            *timer = None;
            Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the relay {what} nothing for {}", humantime::format_duration(timeout)),
            ))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.reading = None;
                Poll::Ready(result)
            }
            Poll::Pending => expired(&mut this.reading, this.timeout, cx, "sent").map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.writing = None;
                Poll::Ready(result)
            }
            Poll::Pending => expired(&mut this.writing, this.timeout, cx, "accepted").map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                this.writing = None;
                Poll::Ready(result)
            }
            Poll::Pending => expired(&mut this.writing, this.timeout, cx, "accepted").map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(result) => {
                this.writing = None;
                Poll::Ready(result)
            }
            Poll::Pending => expired(&mut this.writing, this.timeout, cx, "accepted").map(Err),
        }
    }
}

impl<S> fmt::Debug for Deadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl AsyncTokioStream for Deadline<TcpStream> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl AsyncTokioStream for Deadline<tokio_rustls::client::TlsStream<TcpStream>> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().0.peer_addr()
    }
}
