//! Limits shared by every replica: fixed-window counters in Redis (`INCR` plus expiry in one
//! atomic script), windows numbered by the application's clock. While Redis does not answer,
//! each replica counts in-process instead (fail open to local limits, never to no limits), says
//! so once in the log and in `gatehouse_rate_limit_degraded`, and returns to the shared counts
//! on the first answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use redis::{
    Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::MemoryLimits;
use crate::{
    domain::{
        Clock,
        error::Error,
        limits::{Limit, Rate, RateLimitBackend, Rates},
    },
    metrics::METRICS,
};

/// Longest wait for Redis before a request counts in-process: a sign-in should not wait on a
/// rate limit longer than on its password hash.
const REDIS_BUDGET: Duration = Duration::from_millis(500);

/// Counts in Redis under `<prefix>:rl:<limit>:<window>:<key>`.
pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
    script: Script,
    /// The same limits per replica, for while Redis is away.
    fallback: MemoryLimits,
    degraded: AtomicBool,
    /// The URL without its passwords, for the log.
    shown: String,
}

impl RedisLimits {
    /// Connects to `url`, reconnecting on its own after failures. A Redis that does not answer
    /// at start is not fatal: the replica starts on in-process limits and warns.
    pub async fn connect(url: &str, prefix: &str, clock: Arc<dyn Clock>, rates: &Rates) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_BUDGET / 2))
            .set_response_timeout(Some(REDIS_BUDGET))
            // Reconnection happens behind later requests; none waits through a backoff series.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        // Increment, and set the expiry only when the key is new: one round trip, atomic.
        let script = Script::new(
            "local n = redis.call('INCR', KEYS[1]) \
             if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
             return n",
        );
        let fallback = MemoryLimits::new(rates, Arc::clone(&clock));
        let limits = Self {
            conn,
            prefix: prefix.to_owned(),
            clock,
            script,
            fallback,
            degraded: AtomicBool::new(false),
            shown: crate::redact::url(url),
        };
        let mut conn = limits.conn.clone();
        let ping = tokio::time::timeout(REDIS_BUDGET * 2, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        if !matches!(ping, Ok(Ok(_))) {
            limits.degrade("does not answer at start");
        }
        Ok(limits)
    }

    /// Notes the switch to in-process counting, once per outage.
    fn degrade(&self, why: &str) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            METRICS.rate_limit_degraded(true);
            tracing::warn!(
                redis = %self.shown,
                why,
                "Redis is unavailable: rate limits are counted per replica until it answers (each replica allows \
                 the full rate, so the cluster-wide limit is multiplied by the replica count meanwhile)"
            );
        }
    }

    /// One INCR-with-expiry in Redis: the count in the window, and the time left in it.
    async fn shared_hit(&self, rate: Rate, limit: Limit, key: &str) -> Result<(u64, i64), String> {
        let period_ms = i64::try_from(rate.per.as_millis()).unwrap_or(i64::MAX).max(1);
        let now_ms = self.clock.now().timestamp_millis();
        let window = now_ms.div_euclid(period_ms);
        let remaining_ms = period_ms - now_ms.rem_euclid(period_ms);
        let redis_key = format!("{}:rl:{}:{window}:{key}", self.prefix, limit.name());
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(redis_key);
        // Outlive the window a little so clock skew between replicas cannot reset it.
        invocation.arg(remaining_ms + 1000);
        let call = invocation.invoke_async::<u64>(&mut conn);
        match tokio::time::timeout(REDIS_BUDGET, call).await {
            Ok(Ok(count)) => Ok((count, remaining_ms)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {REDIS_BUDGET:?}")),
        }
    }
}

#[async_trait]
impl RateLimitBackend for RedisLimits {
    async fn hit(&self, limit: Limit, rate: Rate, key: &str) -> Result<Option<Duration>, Error> {
        match self.shared_hit(rate, limit, key).await {
            Ok((count, remaining_ms)) => {
                if self.degraded.swap(false, Ordering::AcqRel) {
                    METRICS.rate_limit_degraded(false);
                    tracing::info!("Redis answers again: rate limits are shared between replicas once more");
                }
                Ok((count > u64::from(rate.count))
                    .then(|| Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0))))
            }
            Err(why) => {
                self.degrade(&why);
                METRICS.rate_limit_fallback();
                self.fallback.hit(limit, rate, key).await
            }
        }
    }
}
