//! Gatehouse: a gRPC identity service (accounts, sessions, learner profiles) over SQLite or
//! PostgreSQL. `main.rs` is a thin shim over this library so that tests link the real server.
// The panic lints are denied in Cargo.toml; unit tests may unwrap.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod idp;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod ratelimit;
pub mod redact;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use startup::Application;
