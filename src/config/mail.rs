//! Outgoing mail: the SMTP relay, retries and templates.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;

use super::parse_secret;
use crate::mail::{SmtpSettings, SmtpTls};

/// Outgoing mail: the SMTP relay, retries and templates.
#[derive(Clone, Args)]
#[command(next_help_heading = "Mail")]
pub struct MailArgs {
    /// Base URL of the front end; mail links are <url>/verify-email?token=… and
    /// <url>/reset-password?token=….
    #[arg(long, env = "GATEHOUSE_FRONTEND_URL", default_value = "http://localhost:3000")]
    pub frontend_url: String,

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
}

impl MailArgs {
    /// The relay's settings, when one is configured (otherwise mail goes to the outbox).
    pub fn smtp_settings(&self) -> anyhow::Result<Option<SmtpSettings>> {
        let Some(host) = &self.smtp_host else { return Ok(None) };
        Ok(Some(SmtpSettings {
            host: host.clone(),
            port: self.smtp_port,
            tls: self.smtp_tls,
            ca_file: self.smtp_ca_file.clone(),
            username: self.smtp_username.clone(),
            password: self.smtp_password()?,
            timeout: self.smtp_timeout,
        }))
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
}
