//! Business rules: accounts, credentials, sessions and profiles. Knows the storage traits,
//! never tonic or sqlx.

pub mod audit;
pub mod auth;
pub mod cipher;
pub mod clock;
pub mod email;
pub mod error;
pub mod limits;
pub mod notify;
pub mod oauth;
pub mod password;
pub mod profile;
pub mod recovery;
pub mod token;

pub use auth::{Auth, AuthConfig, AuthDeps, ClientInfo, Lockout};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldViolation};
pub use oauth::OAuth;
pub use profile::Profiles;
