//! Limits shared by every replica: fixed-window counters in Redis (`INCR` plus expiry in one
//! atomic script), windows numbered by the application's clock.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager};

use crate::domain::{
    Clock,
    error::Error,
    limits::{Limit, Rate, RateLimitBackend},
};

/// Counts in Redis under `<prefix>:rl:<limit>:<window>:<key>`.
pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
    script: Script,
}

impl RedisLimits {
    /// Connects to `url` (reconnecting on its own after failures).
    pub async fn connect(url: &str, prefix: &str, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        // Increment, and set the expiry only when the key is new: one round trip, atomic.
        let script = Script::new(
            "local n = redis.call('INCR', KEYS[1]) \
             if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
             return n",
        );
        Ok(Self { conn, prefix: prefix.to_owned(), clock, script })
    }
}

#[async_trait]
impl RateLimitBackend for RedisLimits {
    async fn hit(&self, limit: Limit, rate: Rate, key: &str) -> Result<Option<Duration>, Error> {
        let period_ms = i64::try_from(rate.per.as_millis()).unwrap_or(i64::MAX).max(1);
        let now_ms = self.clock.now().timestamp_millis();
        let window = now_ms.div_euclid(period_ms);
        let remaining_ms = period_ms - now_ms.rem_euclid(period_ms);
        let redis_key = format!("{}:rl:{}:{window}:{key}", self.prefix, limit.name());
        let mut conn = self.conn.clone();
        let count: u64 = self
            .script
            .key(redis_key)
            // Outlive the window a little so clock skew between replicas cannot reset it.
            .arg(remaining_ms + 1000)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::Unavailable(anyhow::anyhow!("redis: {e}")))?;
        Ok((count > u64::from(rate.count)).then(|| Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0))))
    }
}
