//! The development transport: every message becomes an `.eml` file in the outbox folder, with
//! a `.txt` beside it holding the decoded plain-text part, so that `cargo run` users (and
//! scripts) can follow verification and reset links without a mail server.

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::message::Mailbox;

use super::{Transport, build_message};
use crate::domain::notify::Mail;

/// Writes messages to files.
pub struct Outbox {
    dir: PathBuf,
    from: Mailbox,
    /// Log each message's links (development only: they carry single-use tokens).
    log_links: bool,
}

impl Outbox {
    /// An outbox in `dir`, created if needed.
    pub fn new(dir: PathBuf, from: &str, log_links: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, from: from.parse()?, log_links })
    }
}

#[async_trait]
impl Transport for Outbox {
    async fn send(&self, mail: &Mail) -> anyhow::Result<()> {
        let message = build_message(&self.from, mail)?;
        let name = format!("{}-{}.eml", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"), uuid::Uuid::new_v4().simple());
        let path = self.dir.join(name);
        let partial = path.with_extension("eml.partial");
        tokio::fs::write(&partial, message.formatted()).await?;
        tokio::fs::rename(&partial, &path).await?;
        let readable = format!("To: {}\nSubject: {}\n\n{}", mail.to, mail.subject, mail.text);
        // Write then rename, so that a script watching the outbox never reads half a file.
        let partial = path.with_extension("txt.partial");
        tokio::fs::write(&partial, readable).await?;
        tokio::fs::rename(&partial, path.with_extension("txt")).await?;
        let links: Vec<&str> = mail.text.split_whitespace().filter(|w| w.starts_with("http")).collect();
        if self.log_links {
            tracing::info!(path = %path.display(), subject = %mail.subject, links = ?links, "mail written to the outbox");
        } else {
            tracing::info!(path = %path.display(), subject = %mail.subject, "mail written to the outbox");
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "outbox"
    }
}
