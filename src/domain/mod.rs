//! Business rules: accounts, credentials, sessions and profiles. Knows the storage traits,
//! never tonic or sqlx. Every service holds the shared [`core::Core`], and makes, validates and
//! ends sessions only through [`session::Sessions`]; each hands out its own views
//! ([`user::User`], [`session::Session`], ...) rather than storage rows.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod breach;
pub mod caller;
pub mod cipher;
pub mod client;
pub mod clock;
pub mod consent;
pub mod core;
pub mod email;
pub mod error;
pub mod factors;
pub mod keys;
pub mod limits;
pub mod links;
pub mod lockout;
pub mod mesh;
pub mod notify;
pub mod oauth;
pub mod password;
pub mod privacy;
pub mod profile;
pub mod recovery;
pub mod revocations;
pub mod session;
pub mod session_cache;
pub mod token;
pub mod user;

pub use auth::{Auth, AuthConfig, AuthDeps};
pub use client::ClientInfo;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldViolation};
pub use lockout::Lockout;
pub use oauth::OAuth;
pub use profile::Profiles;
pub use recovery::Recovery;
