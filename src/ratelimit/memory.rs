//! In-process GCRA limits from `governor`, timed by the application's clock so tests can move
//! time.

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use async_trait::async_trait;
use governor::{
    Quota, RateLimiter, clock::Clock as GovernorClock, middleware::NoOpMiddleware, state::keyed::DefaultKeyedStateStore,
};

use crate::domain::{
    Clock,
    error::Error,
    limits::{Limit, Rate, RateLimitBackend, Rates},
};

/// Adapts the application clock to governor's.
#[derive(Clone)]
struct AppClock(Arc<dyn Clock>);

impl GovernorClock for AppClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let micros = self.0.now().timestamp_micros();
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    }
}

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, AppClock, NoOpMiddleware<Duration>>;

/// One keyed limiter per limit.
pub struct MemoryLimits {
    limiters: HashMap<Limit, Keyed>,
    clock: AppClock,
}

impl MemoryLimits {
    /// Limiters for `rates`.
    pub fn new(rates: &Rates, clock: Arc<dyn Clock>) -> Self {
        let clock = AppClock(clock);
        let limiters = Limit::ALL
            .into_iter()
            .map(|limit| (limit, RateLimiter::dashmap_with_clock(quota(rates.of(limit)), clock.clone())))
            .collect();
        Self { limiters, clock }
    }
}

/// `count` per `per`, as a burst of `count` refilled evenly over the period.
fn quota(rate: Rate) -> Quota {
    let burst = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let every = rate.per / rate.count.max(1);
    Quota::with_period(every).unwrap_or_else(|| Quota::per_second(burst)).allow_burst(burst)
}

#[async_trait]
impl RateLimitBackend for MemoryLimits {
    async fn hit(&self, limit: Limit, _rate: Rate, key: &str) -> Result<Option<Duration>, Error> {
        let Some(limiter) = self.limiters.get(&limit) else { return Ok(None) };
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(None),
            Err(not_until) => Ok(Some(not_until.wait_time_from(self.clock.now()))),
        }
    }

    fn shrink(&self) {
        for limiter in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
