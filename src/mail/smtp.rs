//! SMTP delivery through lettre: STARTTLS, implicit TLS or (loopback/tests only) plaintext.

use std::time::Duration;

use async_trait::async_trait;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor, message::Mailbox, transport::smtp::authentication::Credentials,
};
use secrecy::{ExposeSecret, SecretString};

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
    /// Login, if the relay needs one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<SecretString>,
    /// Connection and command timeout.
    pub timeout: Duration,
}

/// The SMTP transport.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// A pooled transport for `settings`, sending as `from`.
    pub fn new(settings: &SmtpSettings, from: &str) -> anyhow::Result<Self> {
        let builder = match settings.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
        }
        Ok(Self { transport: builder.build(), from: from.parse()? })
    }
}

#[async_trait]
impl Transport for Smtp {
    async fn send(&self, mail: &Mail) -> anyhow::Result<()> {
        let message = build_message(&self.from, mail)?;
        self.transport.send(message).await?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}
