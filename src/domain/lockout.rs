//! The account lockout: consecutive failed credential checks (passwords and second-factor
//! codes alike) slow an account down. Shared by `Auth` and `Factors`, so guesses at either
//! add up to one budget.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{core::Core, error::Error};
use crate::storage::AttemptState;

/// Most times one attempt re-reads the lock state after losing a race for a slot; each race
/// is lost only to an attempt that took a slot, so a burst of n loses at most n - 1.
const MAX_ATTEMPT_RACES: usize = 256;

/// Failed sign-ins in a row beyond `threshold` lock the account for `base`, doubling with each
/// further failure up to `max`. A lock always expires, and a success or a reset clears it.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    /// Failures allowed before the first lock.
    pub threshold: u32,
    /// First lock.
    pub base: TimeDelta,
    /// Longest lock.
    pub max: TimeDelta,
}

impl Lockout {
    /// How long to lock after `failures` consecutive failures, if at all.
    pub fn duration(&self, failures: i32) -> Option<TimeDelta> {
        let over = u32::try_from(failures).ok()?.checked_sub(self.threshold)?;
        let factor = 1i32.checked_shl(over.min(30)).unwrap_or(i32::MAX);
        Some(self.base.checked_mul(factor).map_or(self.max, |d| d.min(self.max)))
    }

    /// Takes an attempt slot for `user_id`: true if this guess may be evaluated, false while
    /// the account is locked. The attempt that reaches the threshold sets the lock as it takes
    /// its slot (a success then lifts it), so parallel guesses cannot slip in between the
    /// count and the lock, on one server or many.
    pub(crate) async fn take_attempt(
        &self,
        core: &Core,
        user_id: Uuid,
        seen: AttemptState,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        Ok(self.take_slot(core, user_id, seen, now).await?.is_some())
    }

    /// [`Lockout::take_attempt`], returning the count the attempt wrote (for
    /// [`crate::storage::UserStore::refund_attempt`]); `None` while locked.
    pub(crate) async fn take_slot(
        &self,
        core: &Core,
        user_id: Uuid,
        mut seen: AttemptState,
        now: DateTime<Utc>,
    ) -> Result<Option<i32>, Error> {
        for _ in 0..MAX_ATTEMPT_RACES {
            if seen.locked_until.is_some_and(|until| until > now) {
                return Ok(None);
            }
            let attempts = seen.failed_sign_ins.saturating_add(1);
            let lock = self.duration(attempts);
            if core.store.take_attempt(user_id, &seen, now, lock.map(|d| now + d)).await? {
                if let Some(lock) = lock {
                    tracing::info!(user_id = %user_id, attempts, lock_seconds = lock.num_seconds(), "account temporarily locked unless this attempt is right");
                }
                return Ok(Some(attempts));
            }
            match core.store.attempt_state(user_id).await? {
                Some(state) => seen = state,
                None => return Ok(None),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!("credential attempts on one account kept conflicting")))
    }
}
