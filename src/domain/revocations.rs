//! Push revocation: every replica follows the revocation feed in the database and fans new
//! entries out to its `WatchRevocations` streams. A revocation made on one replica reaches the
//! others through PostgreSQL LISTEN/NOTIFY (or, on SQLite, the next poll). The follower also
//! reads the user-change feed, and turns both into evictions from the replica's session cache,
//! confirming to it after every pass that read both feeds to their end.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, broadcast, broadcast::error::RecvError, mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use uuid::Uuid;

use super::{error::Error, session_cache::SessionCache};
use crate::{
    metrics::METRICS,
    storage::{RevocationRow, Store, StoreError},
};

/// One entry of the feed: a session that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position in the feed (increasing; a watcher resumes after the last one it saw).
    pub id: i64,
    /// The session that ended.
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Why (`sign_out`, `password_changed`, ...).
    pub reason: String,
    /// When.
    pub revoked_at: DateTime<Utc>,
}

impl From<RevocationRow> for Revocation {
    fn from(r: RevocationRow) -> Self {
        Self { id: r.id, session_id: r.session_id, user_id: r.user_id, reason: r.reason, revoked_at: r.created_at }
    }
}

/// Why a watch stream ended early.
#[derive(Debug)]
pub enum WatchEnd {
    /// The backlog could not be read.
    Store(Error),
    /// The server is stopping; the watcher resumes after `last` elsewhere, without a gap.
    Stopping {
        /// The last id sent.
        last: i64,
    },
    /// The watcher read too slowly to keep up and must resume from its last id.
    Lagged,
}

/// Most ids remembered to drop live duplicates of backlog entries.
const DEDUPE_MAX: usize = 10_000;

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
    /// Every user-change id up to this one has been applied to the cache.
    user_cursor: AtomicI64,
    /// Told about every entry of both feeds, and about each caught-up pass.
    cache: Arc<SessionCache>,
}

impl RevocationHub {
    /// A hub starting after the newest entry of each feed, evicting from `cache`.
    pub async fn start(store: Arc<dyn Store>, cache: Arc<SessionCache>) -> Result<Arc<Self>, Error> {
        let cursor = store.last_revocation_id().await?;
        let user_cursor = store.last_user_change_id().await?;
        let (tx, _) = broadcast::channel(4096);
        let (stopping, _) = watch::channel(false);
        // The cache starts empty, and both cursors were read just now.
        cache.confirm(Instant::now());
        Ok(Arc::new(Self {
            store,
            tx,
            wake: Notify::new(),
            cursor: AtomicI64::new(cursor),
            stopping,
            user_cursor: AtomicI64::new(user_cursor),
            cache,
        }))
    }

    /// The session cache the follower evicts from.
    pub fn cache(&self) -> &SessionCache {
        &self.cache
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

    /// The newest id broadcast so far.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Every entry after `after_id` (after the newest one when `after_id` is 0 or less): the
    /// backlog, then live entries, each once and in order. Returns where the stream starts (a
    /// watcher that has seen nothing yet can resume from there without a gap) and the stream.
    pub fn watch(
        self: &Arc<Self>,
        after_id: i64,
    ) -> (i64, impl Stream<Item = Result<Revocation, WatchEnd>> + Send + 'static) {
        // Subscribe before reading the backlog, so nothing falls between the two.
        let mut live = self.tx.subscribe();
        let after = if after_id > 0 { after_id } else { self.cursor() };
        let hub = Arc::clone(self);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut sent: BTreeSet<i64> = BTreeSet::new();
            let mut last = after;
            // The backlog: everything after the watcher's last id.
            loop {
                let page = match hub.store.revocations_after(last, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(WatchEnd::Store(e.into()))).await;
                        return;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for row in page {
                    last = last.max(row.id);
                    sent.insert(row.id);
                    if tx.send(Ok(row.into())).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = hub.stopped() => {
                        // Ending the stream lets shutdown finish.
                        let _ = tx.send(Err(WatchEnd::Stopping { last })).await;
                        return;
                    }
                };
                match received {
                    Ok(row) if row.id > after && sent.insert(row.id) => {
                        last = last.max(row.id);
                        if tx.send(Ok(row.into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(WatchEnd::Lagged)).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
                // Bound the dedupe set: ids far behind can no longer arrive live.
                if sent.len() > DEDUPE_MAX
                    && let Some(newest) = sent.last().copied()
                {
                    sent = sent.split_off(&(newest - DEDUPE_MAX as i64 / 2));
                }
            }
        });
        (after, ReceiverStream::new(rx))
    }

    /// Follows both feeds until aborted, waking on local changes, on other replicas' notices,
    /// and every `poll` at the latest (which must be well inside the cache's feed bound: a
    /// pass that reaches the end of both feeds is what keeps the cache serving).
    pub async fn run(self: Arc<Self>, poll: Duration) {
        let mut revocations = Follow::new(self.cursor());
        let mut users = Follow::new(self.user_cursor.load(Ordering::Acquire));
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.store.wait_for_revocations(poll) => {}
            }
            let began = Instant::now();
            let read_revocations = revocations
                .pass(
                    |after| self.store.revocations_after(after, PAGE),
                    |row: &RevocationRow| row.id,
                    |row| {
                        self.cache.invalidate_user(row.user_id);
                        observe_delay(row.created_at);
                        // No receivers is fine: nobody is watching.
                        let _ = self.tx.send(row);
                    },
                )
                .await;
            self.cursor.store(revocations.cursor, Ordering::Release);
            let read_users = users
                .pass(
                    |after| self.store.user_changes_after(after, PAGE),
                    |row| row.id,
                    |row| self.cache.invalidate_user(row.user_id),
                )
                .await;
            self.user_cursor.store(users.cursor, Ordering::Release);
            match (read_revocations, read_users) {
                (Ok(()), Ok(())) => self.cache.confirm(began),
                (Err(error), _) | (_, Err(error)) => tracing::warn!(%error, "reading the revocation feed failed"),
            }
        }
    }
}

/// How long after it was recorded (by any replica) an entry reached this one.
fn observe_delay(recorded: DateTime<Utc>) {
    let delay = (Utc::now() - recorded).to_std().unwrap_or_default();
    METRICS.observe_feed_delay(delay);
}

/// A follower's position in one feed: ids are taken in order, but a transaction can take an id
/// and commit after a later one, so a hole is waited for before it is passed over.
struct Follow {
    /// Every id up to this one has been handled (or given up on).
    cursor: i64,
    /// Ids beyond a hole, already handled.
    ahead: BTreeSet<i64>,
    /// Since when the oldest hole has been open.
    gap_since: Option<Instant>,
}

impl Follow {
    fn new(cursor: i64) -> Self {
        Self { cursor, ahead: BTreeSet::new(), gap_since: None }
    }

    /// Reads the feed from the cursor to its end, handing each new entry to `handle` once.
    async fn pass<R, F, Fut>(
        &mut self,
        read: F,
        id: impl Fn(&R) -> i64,
        mut handle: impl FnMut(R),
    ) -> Result<(), StoreError>
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Result<Vec<R>, StoreError>>,
    {
        loop {
            let rows = read(self.cursor).await?;
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                if self.ahead.insert(id(&row)) {
                    handle(row);
                }
            }
            // Advance over contiguous ids; hold at a hole until it fills or times out.
            while self.ahead.first().is_some_and(|id| *id == self.cursor + 1) {
                self.ahead.pop_first();
                self.cursor += 1;
            }
            if let Some(first) = self.ahead.first().copied() {
                let since = *self.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GAP_PATIENCE {
                    self.cursor = first - 1;
                    self.gap_since = None;
                    continue;
                }
            } else {
                self.gap_since = None;
            }
            if !full {
                return Ok(());
            }
        }
    }
}
