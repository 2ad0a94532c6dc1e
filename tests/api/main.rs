//! The integration suite: one binary, every behaviour run against the real server over gRPC,
//! once on SQLite and once on PostgreSQL.
// A failed expectation in a test is a panic by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod smtp;

mod abuse;
mod auth;
mod breach;
mod connections;
mod factors;
mod faults;
mod full_disk;
mod health;
mod idp;
mod mail_tls;
mod mesh;
mod oauth;
mod outage;
mod passkeys;
mod pgbouncer;
mod privacy;
mod profile;
mod recovery;
mod redact;
mod session_cache;
mod sessions;
mod shutdown;
mod storage;
mod throttle;
mod tls;
