//! Business rules: accounts, credentials, sessions and profiles. Knows the storage traits,
//! never tonic or sqlx.

pub mod auth;
pub mod clock;
pub mod email;
pub mod error;
pub mod password;
pub mod profile;
pub mod token;

pub use auth::{Auth, AuthConfig, ClientInfo};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldViolation};
pub use profile::Profiles;
