//! The domain's error type. `grpc::status` is the only place that turns it into a gRPC status.

use crate::storage::StoreError;

/// What went wrong, in terms a caller can act on. Messages never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; one entry per offending field.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// Credentials or session token are wrong, unknown, expired or revoked.
    #[error("unauthenticated")]
    Unauthenticated(AuthFailure),
    /// A unique thing (named) already exists.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call needs a fresher or stronger sign-in first; `reason` is the machine-readable
    /// `ErrorInfo` reason a front end acts on.
    #[error("{message}")]
    StepUpRequired {
        /// `REAUTHENTICATION_REQUIRED` or `SECOND_FACTOR_REQUIRED`.
        reason: &'static str,
        /// What to do, for people.
        message: String,
        /// The oldest sign-in accepted, in seconds.
        max_age_seconds: i64,
    },
    /// A thing (named) does not exist or is not the caller's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Too much work queued; retry later.
    #[error("{0}")]
    ResourceExhausted(&'static str),
    /// Concurrent changes kept conflicting with this one; the caller may retry.
    #[error("{0}")]
    Aborted(&'static str),
    /// The caller is over a rate limit.
    #[error("rate limited")]
    RateLimited {
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// An identity provider did not answer in time or answered nonsense.
    #[error("identity provider unavailable")]
    ProviderUnavailable,
    /// A dependency (the database) is not answering.
    #[error("unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why authentication failed; each kind has one fixed public message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong password or unknown email: deliberately indistinguishable.
    InvalidCredentials,
    /// The bearer token is missing, malformed, unknown, expired or revoked.
    InvalidSession,
    /// The identity provider refused the authorization code.
    ProviderRejected,
    /// The provider's ID token failed validation (signature, issuer, audience, expiry, nonce).
    InvalidIdToken,
    /// A second-factor code or its challenge is wrong, used or expired.
    InvalidSecondFactor,
    /// A passkey assertion or its ceremony is wrong, used or expired.
    InvalidPasskey,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `profile.role`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl Error {
    /// Signing in (by any method) to an account whose address is unverified, when
    /// verification is required.
    pub fn email_not_verified() -> Self {
        Self::FailedPrecondition(
            "the email address is not verified yet: follow the link sent to it, or ask for a new one".into(),
        )
    }

    /// An `InvalidArgument` error for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(source) => Error::Unavailable(source.into()),
            StoreError::NotFound => Error::NotFound("record"),
            // Expected conflicts are handled where they can happen; any other is a bug.
            StoreError::Conflict(constraint) => Error::Internal(anyhow::anyhow!("unexpected conflict on {constraint}")),
            StoreError::Setup(why) => Error::Internal(anyhow::anyhow!(why)),
            StoreError::Other(source) => Error::Internal(source.into()),
        }
    }
}

/// Collects field violations while a request is parsed, so that all of them are reported.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records the error of `result` under `field`, returning the value if there was none.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation::new(field, description));
                None
            }
        }
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Fails with every recorded violation, if there are any.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}
