//! The validated-session cache: `GetSession` (and every bearer-authenticated call) answered
//! from memory, without the flaw of a plain TTL cache (a revoked session alive until the entry
//! ages out).
//!
//! How an entry stops being served:
//! - **Local changes** (this replica revoked or changed something) stamp a per-user *tombstone*
//!   before the RPC that caused them returns.
//! - **Other replicas' changes** arrive through the revocation and user-change feeds, which the
//!   [`RevocationHub`](super::revocations::RevocationHub) follows (woken by `NOTIFY`) and turns
//!   into the same tombstones.
//! - **A deaf follower**: the hub confirms every time it has read both feeds to their end. If
//!   no confirmation came within `feed_bound`, every lookup bypasses the cache; when the
//!   follower hears again, everything cached before is dropped.
//!
//! Entries and tombstones are ordered by one counter, not by time: an entry is stale when a
//! tombstone of its user (or the global floor) was stamped after the entry's database read
//! *began*. A read racing a revocation therefore never re-fills a revoked session.
//!
//! Only answers that validate are cached, and [`Sessions`](super::session::Sessions) checks
//! expiry on every hit; anything that would refuse asks the database first.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use moka::{notification::RemovalCause, sync::Cache};
use uuid::Uuid;

use super::caller::Authenticated;
use crate::metrics::{CacheEvent, METRICS};

fn observe(event: CacheEvent) {
    METRICS.session_cache(event);
}

/// How the cache is sized and how stale the feed may get before it is bypassed.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Most entries; 0 turns the cache off.
    pub entries: u64,
    /// Longest an entry is served after its database read; zero turns the cache off.
    pub ttl: Duration,
    /// Longest the feed follower may go without confirming it is caught up before lookups
    /// bypass the cache.
    pub feed_bound: Duration,
}

/// A cached, validated session.
#[derive(Debug, Clone)]
pub struct Cached {
    /// What the call returns.
    pub auth: Authenticated,
    /// The session's absolute expiry (`auth.session.expires_at` is the earlier of this and the
    /// idle deadline).
    pub absolute: DateTime<Utc>,
    read: Ticket,
}

/// Taken before a database read whose answer may be cached.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    seq: u64,
    at: Instant,
}

struct Shared {
    /// Orders reads and invalidations.
    seq: AtomicU64,
    /// Entries whose read began at or before this are stale (every entry when the follower
    /// was deaf, or a tombstone was dropped for room).
    floor: AtomicU64,
    /// Nanoseconds after `base` of the follower's last confirmation.
    confirmed: AtomicU64,
    base: Instant,
}

impl Shared {
    fn stamp(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::AcqRel)
    }

    fn drop_all(&self) {
        let stamp = self.stamp();
        self.floor.fetch_max(stamp, Ordering::AcqRel);
    }
}

struct Inner {
    entries: Cache<[u8; 32], Arc<Cached>>,
    /// The stamp of each user's latest change, kept as long as an entry can live.
    tombstones: Cache<Uuid, u64>,
    ttl: Duration,
    feed_bound: Duration,
    shared: Arc<Shared>,
}

/// The validated-session cache, keyed by the token's keyed hash (never the token).
pub struct SessionCache {
    inner: Option<Inner>,
}

impl SessionCache {
    /// A cache with `settings`; off when its size or age is zero.
    pub fn new(settings: CacheSettings) -> Self {
        if settings.entries == 0 || settings.ttl.is_zero() {
            return Self { inner: None };
        }
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(1),
            floor: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            base: Instant::now(),
        });
        let entries = Cache::builder()
            .max_capacity(settings.entries)
            .time_to_live(settings.ttl)
            .eviction_listener(|_, _, cause| {
                if cause == RemovalCause::Size {
                    observe(CacheEvent::Evicted);
                }
            })
            .build();
        let on_tombstone = Arc::clone(&shared);
        // A tombstone dropped for room would let a stale entry through: drop every entry then.
        let tombstones = Cache::builder()
            .max_capacity(settings.entries.max(10_000))
            .time_to_live(settings.ttl)
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    on_tombstone.drop_all();
                }
            })
            .build();
        Self { inner: Some(Inner { entries, tombstones, ttl: settings.ttl, feed_bound: settings.feed_bound, shared }) }
    }

    /// A cache that never holds anything.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The entry for `key` if it may be served: the follower is caught up, and neither the
    /// entry's user nor the whole cache was invalidated after its read began.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Cached>> {
        let inner = self.inner.as_ref()?;
        if inner.deaf() {
            observe(CacheEvent::Bypass);
            return None;
        }
        let Some(entry) = inner.entries.get(key) else {
            observe(CacheEvent::Miss);
            return None;
        };
        let seq = entry.read.seq;
        let stale = seq <= inner.shared.floor.load(Ordering::Acquire)
            || inner.tombstones.get(&entry.auth.user.id).is_some_and(|stamp| seq <= stamp)
            // moka ages entries from their insertion; the guarantee counts from the read.
            || entry.read.at.elapsed() >= inner.ttl;
        if stale {
            inner.entries.invalidate(key);
            observe(CacheEvent::Invalidated);
            observe(CacheEvent::Miss);
            return None;
        }
        observe(CacheEvent::Hit);
        Some(entry)
    }

    /// Taken before the database read whose answer [`SessionCache::fill`] may cache; none
    /// when the cache is off or bypassed.
    pub fn ticket(&self) -> Option<Ticket> {
        let inner = self.inner.as_ref()?;
        if inner.deaf() {
            return None;
        }
        Some(Ticket { seq: inner.shared.seq.load(Ordering::Acquire), at: Instant::now() })
    }

    /// Caches a validated answer read after `ticket` was taken.
    pub fn fill(&self, key: [u8; 32], ticket: Ticket, auth: Authenticated, absolute: DateTime<Utc>) {
        if let Some(inner) = &self.inner {
            inner.entries.insert(key, Arc::new(Cached { auth, absolute, read: ticket }));
        }
    }

    /// Replaces an entry after its `last_active_at` moved (the read it came from still counts).
    pub fn refresh(&self, key: [u8; 32], entry: Cached) {
        if let Some(inner) = &self.inner {
            inner.entries.insert(key, Arc::new(entry));
        }
    }

    /// Stops serving every entry of `user_id` read before now: their sessions ended or what
    /// `GetSession` returns for them changed.
    pub fn invalidate_user(&self, user_id: Uuid) {
        if let Some(inner) = &self.inner {
            let stamp = inner.shared.stamp();
            inner.tombstones.insert(user_id, stamp);
        }
    }

    /// Stops serving every entry read before now.
    pub fn invalidate_all(&self) {
        if let Some(inner) = &self.inner {
            inner.shared.drop_all();
            inner.entries.invalidate_all();
        }
    }

    /// The follower read both feeds to their end in a pass that began at `began`. After a
    /// deaf spell, everything cached before is dropped: what it missed is unknown.
    pub fn confirm(&self, began: Instant) {
        let Some(inner) = &self.inner else { return };
        if inner.deaf() {
            self.invalidate_all();
        }
        let nanos = u64::try_from(began.saturating_duration_since(inner.shared.base).as_nanos()).unwrap_or(u64::MAX);
        inner.shared.confirmed.fetch_max(nanos, Ordering::AcqRel);
    }

    /// How long ago the follower last confirmed it was caught up (zero when the cache is off).
    pub fn feed_lag(&self) -> Duration {
        self.inner.as_ref().map_or(Duration::ZERO, Inner::lag)
    }

    /// Entries held now (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| {
            inner.entries.run_pending_tasks();
            inner.entries.entry_count()
        })
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn lag(&self) -> Duration {
        let confirmed = Duration::from_nanos(self.shared.confirmed.load(Ordering::Acquire));
        self.shared.base.elapsed().saturating_sub(confirmed)
    }

    fn deaf(&self) -> bool {
        self.lag() > self.feed_bound
    }
}

impl Cached {
    /// This entry after a successful touch at `now`.
    pub fn touched(&self, now: DateTime<Utc>, idle_timeout: chrono::TimeDelta) -> Self {
        let mut next = self.clone();
        next.auth.session.last_active_at = now;
        next.auth.session.expires_at = self.absolute.min(now + idle_timeout);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{caller::Session, user::User};

    fn settings() -> CacheSettings {
        CacheSettings { entries: 1000, ttl: Duration::from_secs(30), feed_bound: Duration::from_secs(1) }
    }

    fn cache() -> SessionCache {
        let cache = SessionCache::new(settings());
        cache.confirm(Instant::now());
        cache
    }

    fn auth(user_id: Uuid) -> Authenticated {
        let now = Utc::now();
        Authenticated {
            user: User {
                id: user_id,
                email: "a@example.com".into(),
                name: "A".into(),
                image: None,
                email_verified: true,
                created_at: now,
                updated_at: now,
            },
            session: Session {
                id: Uuid::new_v4(),
                user_id,
                created_at: now,
                last_active_at: now,
                expires_at: now,
                ip_address: None,
                user_agent: None,
                current: true,
                assurance: super::super::caller::Assurance::single("pwd"),
            },
        }
    }

    #[test]
    fn a_change_stamped_after_the_read_began_keeps_the_answer_out() {
        let cache = cache();
        let user = Uuid::new_v4();
        let ticket = cache.ticket().unwrap();
        // The revocation lands while the read is in flight.
        cache.invalidate_user(user);
        cache.fill([1; 32], ticket, auth(user), Utc::now());
        assert!(cache.get(&[1; 32]).is_none());
        // A read that begins afterwards is served.
        let ticket = cache.ticket().unwrap();
        cache.fill([1; 32], ticket, auth(user), Utc::now());
        assert!(cache.get(&[1; 32]).is_some());
    }

    #[test]
    fn a_deaf_follower_bypasses_and_its_return_drops_everything() {
        let cache = SessionCache::new(CacheSettings { feed_bound: Duration::from_millis(20), ..settings() });
        cache.confirm(Instant::now());
        let ticket = cache.ticket().unwrap();
        cache.fill([2; 32], ticket, auth(Uuid::new_v4()), Utc::now());
        assert!(cache.get(&[2; 32]).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&[2; 32]).is_none(), "served while the follower was deaf");
        assert!(cache.ticket().is_none(), "filled while the follower was deaf");
        cache.confirm(Instant::now());
        assert!(cache.get(&[2; 32]).is_none(), "an entry from before the deaf spell survived it");
    }

    #[test]
    fn off_holds_nothing() {
        let cache = SessionCache::new(CacheSettings { entries: 0, ..settings() });
        assert!(cache.ticket().is_none());
        assert!(!cache.enabled());
    }
}
