//! The session cache's memory bound: 100,000 cached sessions, with realistic field sizes, stay
//! within the bound the README documents. Its own binary, because it counts every allocation
//! of the process through a global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant},
};

use chrono::Utc;
use gatehouse::domain::{
    session::{Authenticated, Session},
    session_cache::{CacheSettings, SessionCache},
    user::User,
};
use uuid::Uuid;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The documented bound for the default 100,000 entries (README, "Session cache").
const BOUND_BYTES: isize = 100 * 1024 * 1024;
const ENTRIES: u64 = 100_000;

fn session(n: u64) -> Authenticated {
    let now = Utc::now();
    let user_id = Uuid::new_v4();
    Authenticated {
        user: User {
            id: user_id,
            email: format!("reader-{n:06}@robotics-book.example.com"),
            name: format!("Reader Number {n:06}"),
            image: Some(format!("https://avatars.githubusercontent.com/u/{n}?v=4")),
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
            ip_address: Some("203.0.113.77".into()),
            // A typical desktop browser's user agent.
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
                    .into(),
            ),
            current: true,
            // A two-factor sign-in: the larger entry.
            assurance: gatehouse::domain::caller::Assurance::two("pwd", "otp"),
        },
    }
}

#[test]
fn a_full_cache_stays_within_its_documented_bound() {
    let settings =
        CacheSettings { entries: ENTRIES, ttl: Duration::from_secs(600), feed_bound: Duration::from_secs(600) };
    let before = LIVE.load(Ordering::Relaxed);
    let cache = SessionCache::new(settings);
    cache.confirm(Instant::now());
    // Twice the bound's entries: the size bound must hold, not only the count of inserts.
    for n in 0..ENTRIES * 2 {
        let ticket = cache.ticket().expect("the cache is on");
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&n.to_le_bytes());
        let auth = session(n);
        let absolute = auth.session.expires_at;
        cache.fill(key, ticket, auth, absolute);
    }
    let held = cache.len();
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{held} cached sessions use {:.1} MiB ({} bytes each)",
        used as f64 / (1024.0 * 1024.0),
        used / held.max(1) as isize
    );
    assert!(held <= ENTRIES, "{held} entries held, above the bound of {ENTRIES}");
    assert!(held >= ENTRIES * 9 / 10, "only {held} entries held: the test did not fill the cache");
    assert!(used < BOUND_BYTES, "{used} bytes for {held} entries, above the documented {BOUND_BYTES}");
}
