//! Mail delivery: a background queue with retries in front of SMTP (lettre) or, for
//! development, a file outbox. Callers never wait for delivery, so a slow or failing relay
//! changes neither their answer nor its timing.

mod outbox;
mod smtp;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use outbox::Outbox;
pub use smtp::{Smtp, SmtpSettings, SmtpTls};

use crate::domain::notify::{Mail, MailSender};

/// Delivers one message.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `mail`; an error may be retried.
    async fn send(&self, mail: &Mail) -> anyhow::Result<()>;
    /// Name for logs.
    fn name(&self) -> &'static str;
}

/// Messages waiting beyond this are dropped (and logged): memory stays bounded.
const QUEUE_CAPACITY: usize = 10_000;

/// A queue drained by a task that retries each message with exponential backoff.
pub struct MailQueue {
    tx: mpsc::Sender<Mail>,
}

impl MailQueue {
    /// Starts the delivery task on the current runtime.
    pub fn start(transport: Arc<dyn Transport>, attempts: u32, first_backoff: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Mail>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            while let Some(mail) = rx.recv().await {
                let transport = Arc::clone(&transport);
                // One task per message, so a slow relay does not hold up the rest.
                tokio::spawn(deliver(transport, mail, attempts.max(1), first_backoff));
            }
        });
        Self { tx }
    }
}

async fn deliver(transport: Arc<dyn Transport>, mail: Mail, attempts: u32, first_backoff: Duration) {
    let mut backoff = first_backoff;
    for attempt in 1..=attempts {
        match transport.send(&mail).await {
            Ok(()) => {
                tracing::debug!(transport = transport.name(), subject = %mail.subject, "mail sent");
                return;
            }
            // The error names the relay and the step that failed (a refused connection, or a
            // relay that accepted and then said nothing within GATEHOUSE_SMTP_TIMEOUT), never
            // the message or the relay's credentials.
            Err(error) if attempt < attempts => {
                tracing::warn!(transport = transport.name(), attempt, error = %format_args!("{error:#}"), retry_in = ?backoff, "mail delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(error) => {
                tracing::error!(transport = transport.name(), attempts, error = %format_args!("{error:#}"), subject = %mail.subject, "mail delivery failed; giving up");
            }
        }
    }
}

impl MailSender for MailQueue {
    fn enqueue(&self, mail: Mail) {
        if let Err(e) = self.tx.try_send(mail) {
            tracing::error!(error = %e, "mail queue full or closed; message dropped");
        }
    }
}

/// Builds the lettre message for `mail`.
pub(crate) fn build_message(from: &lettre::message::Mailbox, mail: &Mail) -> anyhow::Result<lettre::Message> {
    use lettre::message::{Mailbox, MultiPart};
    let to: Mailbox = mail.to.parse()?;
    Ok(lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))?)
}
