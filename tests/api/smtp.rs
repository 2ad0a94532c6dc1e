//! A real SMTP server on loopback, enough of RFC 5321 for lettre: the stand-in for a relay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

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

/// The server; messages arrive on a channel.
pub struct SmtpServer {
    pub port: u16,
    rx: mpsc::UnboundedReceiver<ReceivedMail>,
    /// Answer DATA with a temporary failure this many more times.
    failures_left: Arc<AtomicUsize>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let failures_left = Arc::new(AtomicUsize::new(0));
        let failures = Arc::clone(&failures_left);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, tx.clone(), Arc::clone(&failures)));
            }
        });
        Self { port, rx, failures_left }
    }

    /// Makes the next `n` deliveries fail with a 451 reply.
    pub fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
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

async fn session(stream: tokio::net::TcpStream, tx: mpsc::UnboundedSender<ReceivedMail>, failures: Arc<AtomicUsize>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 localhost test SMTP\r\n").await;
    let mut to = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-localhost\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("MAIL FROM") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            to.clear();
            b"250 OK\r\n"
        } else if let Some(addr) = upper.strip_prefix("RCPT TO:") {
            let _ = addr;
            let raw = &line["RCPT TO:".len()..];
            to.push(raw.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
            b"250 OK\r\n"
        } else if upper.starts_with("DATA") {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            let fail = failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if fail {
                to.clear();
                b"451 temporary failure, try again\r\n"
            } else {
                let data = data.replace("=\r\n", "").replace("=3D", "=");
                let _ = tx.send(ReceivedMail { to: std::mem::take(&mut to), data });
                b"250 queued\r\n"
            }
        } else if upper.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
