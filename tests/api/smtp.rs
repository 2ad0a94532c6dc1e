//! A real SMTP server on loopback, enough of RFC 5321 for lettre: the stand-in for a relay.
//! Plaintext, STARTTLS or implicit TLS; it can also play a stuck relay that accepts
//! connections and never answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::TlsAcceptor;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The raw message (headers and MIME body), with quoted-printable soft breaks removed.
    pub data: String,
}

impl ReceivedMail {
    /// The single-use token in the message's link.
    pub fn token(&self) -> String {
        let start = self.data.find("gatelink_").unwrap_or_else(|| panic!("no token in {}", self.data));
        self.data[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
    }

    /// The decoded subject line.
    pub fn subject(&self) -> &str {
        self.data.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default()
    }
}

/// How the stand-in relay secures its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// Offers STARTTLS and upgrades when asked.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// The server; messages arrive on a channel.
pub struct SmtpServer {
    pub port: u16,
    rx: mpsc::UnboundedReceiver<ReceivedMail>,
    /// Answer DATA with a temporary failure this many more times.
    failures_left: Arc<AtomicUsize>,
    /// Accept connections and never send a byte on them (a stuck relay).
    silent: Arc<AtomicBool>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

/// What every connection of one server shares.
#[derive(Clone)]
struct Shared {
    tx: mpsc::UnboundedSender<ReceivedMail>,
    failures: Arc<AtomicUsize>,
    silent: Arc<AtomicBool>,
    tls: Option<(RelayTls, TlsAcceptor)>,
}

impl SmtpServer {
    /// A plaintext relay.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A relay that speaks TLS with `cert` and `key` (PEM), as STARTTLS or from the first byte.
    pub async fn start_tls(mode: RelayTls, cert: &str, key: &str) -> Self {
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_with(Some((mode, TlsAcceptor::from(Arc::new(config))))).await
    }

    async fn start_with(tls: Option<(RelayTls, TlsAcceptor)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let failures_left = Arc::new(AtomicUsize::new(0));
        let silent = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let shared = Shared { tx, failures: Arc::clone(&failures_left), silent: Arc::clone(&silent), tls };
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(stream, shared.clone()));
            }
        });
        Self { port, rx, failures_left, silent, connections }
    }

    /// Makes the next `n` deliveries fail with a 451 reply.
    pub fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    /// From now on, accepts connections and never says a word on them; `false` makes new
    /// connections normal again (the silent ones stay silent until the client leaves).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until at least `n` connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.connections() < n {
            assert!(std::time::Instant::now() < deadline, "only {} connections within 10 s", self.connections());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next message (waits up to 10 s).
    pub async fn next(&mut self) -> ReceivedMail {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no mail arrived within 10 s")
            .expect("SMTP server stopped")
    }

    /// The next message to `to` whose subject contains `subject`, skipping others.
    pub async fn next_to(&mut self, to: &str, subject: &str) -> ReceivedMail {
        loop {
            let mail = self.next().await;
            if mail.to.iter().any(|t| t == to) && mail.subject().contains(subject) {
                return mail;
            }
        }
    }

    /// Asserts that nothing (more) arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(mail)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("unexpected mail to {:?}: {}", mail.to, mail.subject());
        }
    }
}

async fn connection(mut stream: TcpStream, shared: Shared) {
    if shared.silent.load(Ordering::SeqCst) {
        // Hold the connection open, saying nothing, until the client gives up.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    match &shared.tls {
        None => {
            let mut reader = BufReader::new(stream);
            if greet(&mut reader).await {
                session(&mut reader, false, &shared).await;
            }
        }
        Some((RelayTls::Implicit, acceptor)) => {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let mut reader = BufReader::new(stream);
            if greet(&mut reader).await {
                session(&mut reader, false, &shared).await;
            }
        }
        Some((RelayTls::Starttls, acceptor)) => {
            let mut reader = BufReader::new(stream);
            if greet(&mut reader).await && session(&mut reader, true, &shared).await == Next::Upgrade {
                let Ok(stream) = acceptor.accept(reader.into_inner()).await else { return };
                session(&mut BufReader::new(stream), false, &shared).await;
            }
        }
    }
}

async fn greet<S: AsyncRead + AsyncWrite + Unpin>(reader: &mut BufReader<S>) -> bool {
    reader.get_mut().write_all(b"220 localhost test SMTP\r\n").await.is_ok()
}

/// How a conversation ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Done,
    /// The client asked for STARTTLS and was told to go ahead.
    Upgrade,
}

async fn next_line<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut BufReader<S>,
    offer_starttls: bool,
    shared: &Shared,
) -> Next {
    let mut to = Vec::new();
    while let Some(line) = next_line(reader).await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if offer_starttls {
                b"250-localhost\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
            } else {
                b"250-localhost\r\n250 8BITMIME\r\n"
            }
        } else if upper.starts_with("STARTTLS") && offer_starttls {
            let _ = reader.get_mut().write_all(b"220 go ahead\r\n").await;
            return Next::Upgrade;
        } else if upper.starts_with("HELO") || upper.starts_with("MAIL FROM") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let raw = &line["RCPT TO:".len()..];
            to.push(raw.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
            b"250 OK\r\n"
        } else if upper.starts_with("DATA") {
            let _ = reader.get_mut().write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Some(l) = next_line(reader).await {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            let fail = shared.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if fail {
                to.clear();
                b"451 temporary failure, try again\r\n"
            } else {
                let data = data.replace("=\r\n", "").replace("=3D", "=");
                let _ = shared.tx.send(ReceivedMail { to: std::mem::take(&mut to), data });
                b"250 queued\r\n"
            }
        } else if upper.starts_with("QUIT") {
            let _ = reader.get_mut().write_all(b"221 bye\r\n").await;
            return Next::Done;
        } else {
            b"502 not implemented\r\n"
        };
        if reader.get_mut().write_all(reply).await.is_err() {
            return Next::Done;
        }
    }
    Next::Done
}
