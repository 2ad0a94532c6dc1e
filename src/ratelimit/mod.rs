//! Rate-limit counters: in-process with `governor` (one replica), or in Redis (many replicas
//! enforcing one shared limit).

mod memory;
mod redis;

pub use memory::MemoryLimits;
pub use redis::RedisLimits;
