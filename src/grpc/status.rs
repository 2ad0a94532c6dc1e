//! The only conversion from domain errors to gRPC statuses. Messages come from the variant,
//! never from an underlying source, so no internal detail or secret reaches a client.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Error, error::AuthFailure};

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                let mut summary = Vec::with_capacity(violations.len());
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                    summary.push(format!("{} {}", v.field, v.description));
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {}", summary.join("; ")),
                    details,
                )
            }
            Error::Unauthenticated(AuthFailure::InvalidCredentials) => {
                Status::unauthenticated("invalid email or password")
            }
            Error::Unauthenticated(AuthFailure::InvalidSession) => {
                Status::unauthenticated("missing, invalid or expired session token")
            }
            Error::Unauthenticated(AuthFailure::ProviderRejected) => Status::unauthenticated(
                "the identity provider rejected the authorization code; start the sign-in again",
            ),
            Error::Unauthenticated(AuthFailure::InvalidIdToken) => {
                Status::unauthenticated("the identity provider's ID token is invalid")
            }
            Error::Unauthenticated(AuthFailure::InvalidSecondFactor) => Status::unauthenticated(
                "invalid or expired second-factor code or challenge; sign in again if the challenge expired",
            ),
            Error::Unauthenticated(AuthFailure::InvalidPasskey) => Status::unauthenticated(
                "the passkey could not be verified, or the sign-in expired or was already used; start it again",
            ),
            Error::StepUpRequired { reason, message, max_age_seconds } => {
                let mut details = ErrorDetails::new();
                let metadata =
                    std::collections::HashMap::from([("max_age_seconds".to_owned(), max_age_seconds.to_string())]);
                details.set_error_info(reason, "gatehouse", metadata);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::ProviderUnavailable => {
                Status::unavailable("the identity provider is not answering; try again later")
            }
            Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
            Error::FailedPrecondition(why) => Status::failed_precondition(why),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::ResourceExhausted(why) => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(Duration::from_secs(1)));
                Status::with_error_details(Code::ResourceExhausted, why, details)
            }
            Error::Aborted(why) => Status::aborted(why),
            Error::RateLimited { retry_after } => {
                let mut details = ErrorDetails::new();
                // Whole seconds, rounded up: clients sleep at least this long.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                details.set_retry_info(Some(Duration::from_secs(secs.max(1))));
                Status::with_error_details(Code::ResourceExhausted, "too many requests; retry later", details)
            }
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                Status::unavailable("service temporarily unavailable; try again later")
            }
            Error::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
