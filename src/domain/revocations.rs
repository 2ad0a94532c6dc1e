//! Push revocation: every replica follows the revocation feed in the database and fans new
//! entries out to its `WatchRevocations` streams. A revocation made on one replica reaches the
//! others through PostgreSQL LISTEN/NOTIFY (or, on SQLite, the next poll).

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, broadcast, watch};

use super::error::Error;
use crate::storage::{RevocationRow, Store};

/// How long a hole in the id sequence is waited for (a transaction that took an id but has not
/// committed yet) before it is taken for a rollback.
const GAP_PATIENCE: Duration = Duration::from_secs(2);
/// Largest page read from the feed at once.
const PAGE: i64 = 500;

/// Follows the feed and broadcasts each entry once.
pub struct RevocationHub {
    store: Arc<dyn Store>,
    tx: broadcast::Sender<RevocationRow>,
    wake: Notify,
    /// Every id up to this one has been broadcast (or given up on).
    cursor: AtomicI64,
    /// True once the server is stopping: watchers end their streams so shutdown is not held.
    stopping: watch::Sender<bool>,
}

impl RevocationHub {
    /// A hub starting after the newest entry.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, Error> {
        let cursor = store.last_revocation_id().await?;
        let (tx, _) = broadcast::channel(4096);
        let (stopping, _) = watch::channel(false);
        Ok(Arc::new(Self { store, tx, wake: Notify::new(), cursor: AtomicI64::new(cursor), stopping }))
    }

    /// Tells every watcher that the server is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`RevocationHub::stop`] has been called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Wakes the follower after a local revocation, so local watchers hear at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Live entries from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RevocationRow> {
        self.tx.subscribe()
    }

    /// The newest id broadcast so far.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Feed entries after `after_id` (for a watcher that resumes).
    pub async fn after(&self, after_id: i64) -> Result<Vec<RevocationRow>, Error> {
        Ok(self.store.revocations_after(after_id, PAGE).await?)
    }

    /// Follows the feed until aborted, waking on local revocations, on other replicas' notices,
    /// and every `poll` at the latest.
    pub async fn run(self: Arc<Self>, poll: Duration) {
        let mut sent_ahead: BTreeSet<i64> = BTreeSet::new();
        let mut gap_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.store.wait_for_revocations(poll) => {}
            }
            let mut cursor = self.cursor();
            loop {
                let rows = match self.store.revocations_after(cursor, PAGE).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(%error, "reading the revocation feed failed");
                        break;
                    }
                };
                let full = rows.len() as i64 == PAGE;
                for row in rows {
                    if sent_ahead.insert(row.id) {
                        // No receivers is fine: nobody is watching.
                        let _ = self.tx.send(row);
                    }
                }
                // Advance over contiguous ids; hold at a hole until it fills or times out.
                while sent_ahead.first().is_some_and(|id| *id == cursor + 1) {
                    sent_ahead.pop_first();
                    cursor += 1;
                }
                if let Some(first) = sent_ahead.first().copied() {
                    let since = *gap_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GAP_PATIENCE {
                        cursor = first - 1;
                        gap_since = None;
                        continue;
                    }
                } else {
                    gap_since = None;
                }
                if !full {
                    break;
                }
            }
            self.cursor.store(cursor, Ordering::Release);
        }
    }
}
