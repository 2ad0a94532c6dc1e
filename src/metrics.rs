//! Prometheus metrics, served as text at `/metrics` on the HTTP port. Process-wide, like the
//! process they describe.

use std::sync::{LazyLock, atomic::AtomicU64};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// What happened to one session-cache lookup or entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// Answered from memory.
    Hit,
    /// Not cached (or stale): the database answered.
    Miss,
    /// The feed follower is behind: the database answered and nothing was cached.
    Bypass,
    /// An entry was dropped because its user's sessions or data changed.
    Invalidated,
    /// An entry was dropped to stay within the size bound.
    Evicted,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 0.25 ms to about 4 s: GetSession sits at the bottom, Argon2 sign-ins in the middle.
        Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
    }
}

/// Every metric Gatehouse exports.
pub struct Metrics {
    registry: Registry,
    rpcs: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, LatencyBuckets>,
    sign_in_failures: Counter,
    rate_limited: Family<Labels, Counter>,
    hash_queue: Gauge,
    hashes_abandoned: Counter,
    breached_checks: Family<Labels, Counter>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bypasses: Counter,
    cache_invalidations: Counter,
    cache_evictions: Counter,
    cache_entries: Gauge,
    feed_lag: Gauge<f64, AtomicU64>,
    feed_delay: Histogram,
    limits_degraded: Gauge,
    limits_fallbacks: Counter,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let rpcs = Family::<Labels, Counter>::default();
        registry.register("rpc_requests", "RPCs handled, by method and gRPC status code", rpcs.clone());
        let latency = Family::new_with_constructor(LatencyBuckets);
        registry.register("rpc_duration_seconds", "RPC latency, by method", latency.clone());
        let sign_in_failures = Counter::default();
        registry.register(
            "sign_in_failures",
            "Refused sign-ins (wrong password, unknown email, locked)",
            sign_in_failures.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register("rate_limited", "Requests refused by a rate limit, by limit", rate_limited.clone());
        let hash_queue = Gauge::default();
        registry.register("password_hash_queue_depth", "Password hashes waiting or running", hash_queue.clone());
        let hashes_abandoned = Counter::default();
        registry.register(
            "password_hashes_abandoned",
            "Password checks skipped unhashed because the caller had gone (deadline passed or call dropped)",
            hashes_abandoned.clone(),
        );
        let breached_checks = Family::<Labels, Counter>::default();
        registry.register(
            "breached_password_checks",
            "Breached-password lookups, by result: breached, not_found, or failed (accepted unchecked)",
            breached_checks.clone(),
        );
        let pool_size = Gauge::default();
        registry.register("db_pool_connections", "Open database connections", pool_size.clone());
        let pool_idle = Gauge::default();
        registry.register("db_pool_idle_connections", "Idle database connections", pool_idle.clone());
        let pool_max = Gauge::default();
        registry.register("db_pool_max_connections", "Configured pool maximum", pool_max.clone());
        let cache_hits = Counter::default();
        registry.register("session_cache_hits", "Session validations answered from the cache", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register(
            "session_cache_misses",
            "Session validations the database answered (not cached, stale, or due a touch)",
            cache_misses.clone(),
        );
        let cache_bypasses = Counter::default();
        registry.register(
            "session_cache_bypasses",
            "Session validations that skipped the cache because the feed follower was not caught up",
            cache_bypasses.clone(),
        );
        let cache_invalidations = Counter::default();
        registry.register(
            "session_cache_invalidations",
            "Cached sessions dropped because their user's sessions or data changed",
            cache_invalidations.clone(),
        );
        let cache_evictions = Counter::default();
        registry.register(
            "session_cache_evictions",
            "Cached sessions dropped to stay within the size bound",
            cache_evictions.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register("session_cache_entries", "Sessions held in the cache", cache_entries.clone());
        let feed_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "session_feed_lag_seconds",
            "Time since the feed follower last read the revocation and user-change feeds to their end",
            feed_lag.clone(),
        );
        let feed_delay = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "session_feed_delay_seconds",
            "Delay from a revocation's commit (on any replica) to this replica's follower reading it",
            feed_delay.clone(),
        );
        let limits_degraded = Gauge::default();
        registry.register(
            "rate_limit_degraded",
            "1 while Redis does not answer and rate limits are counted per replica, else 0",
            limits_degraded.clone(),
        );
        let limits_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Rate-limit checks counted in-process because Redis did not answer",
            limits_fallbacks.clone(),
        );
        Self {
            registry,
            rpcs,
            latency,
            sign_in_failures,
            rate_limited,
            hash_queue,
            hashes_abandoned,
            breached_checks,
            pool_size,
            pool_idle,
            pool_max,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_invalidations,
            cache_evictions,
            cache_entries,
            feed_lag,
            feed_delay,
            limits_degraded,
            limits_fallbacks,
        }
    }

    /// Marks the shared (Redis) rate limits as unavailable or back.
    pub fn rate_limit_degraded(&self, degraded: bool) {
        self.limits_degraded.set(i64::from(degraded));
    }

    /// Counts a rate-limit check made in-process because Redis did not answer.
    pub fn rate_limit_fallback(&self) {
        self.limits_fallbacks.inc();
    }

    /// Counts a session-cache event.
    pub fn session_cache(&self, event: CacheEvent) {
        match event {
            CacheEvent::Hit => self.cache_hits.inc(),
            CacheEvent::Miss => self.cache_misses.inc(),
            CacheEvent::Bypass => self.cache_bypasses.inc(),
            CacheEvent::Invalidated => self.cache_invalidations.inc(),
            CacheEvent::Evicted => self.cache_evictions.inc(),
        };
    }

    /// Records how long a revocation took to reach this replica's follower.
    pub fn observe_feed_delay(&self, delay: std::time::Duration) {
        self.feed_delay.observe(delay.as_secs_f64());
    }

    /// Counts a finished RPC.
    pub fn rpc(&self, method: &str, code: tonic::Code, seconds: f64) {
        let method = method.to_owned();
        self.rpcs.get_or_create(&vec![("method", method.clone()), ("code", format!("{code:?}"))]).inc();
        self.latency.get_or_create(&vec![("method", method)]).observe(seconds);
    }

    /// Counts a refused sign-in.
    pub fn sign_in_failed(&self) {
        self.sign_in_failures.inc();
    }

    /// Counts a rate-limit refusal.
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&vec![("limit", limit.to_owned())]).inc();
    }

    /// Counts password checks skipped because their callers had gone.
    pub fn password_hashes_abandoned(&self, n: usize) {
        self.hashes_abandoned.inc_by(n as u64);
    }

    /// Counts a breached-password lookup by its result.
    pub fn breached_password_check(&self, result: &'static str) {
        self.breached_checks.get_or_create(&vec![("result", result.to_owned())]).inc();
    }

    /// The text exposition, with the sampled gauges set first.
    /// `cache` is the session cache's entry count and its feed's lag in seconds.
    pub fn render(&self, hash_queue: usize, pool: (u32, u32, u32), cache: (u64, f64)) -> String {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.hash_queue.set(to_i64(hash_queue as u64));
        self.pool_size.set(i64::from(pool.0));
        self.pool_idle.set(i64::from(pool.1));
        self.pool_max.set(i64::from(pool.2));
        self.cache_entries.set(to_i64(cache.0));
        self.feed_lag.set(cache.1);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A tower layer that counts every RPC by method and status code, with its latency. The code
/// is in the headers of a trailers-only answer, or in the trailers after the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let start = std::time::Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if let Some(code) = grpc_code(response.headers()) {
                METRICS.rpc(&method, code, start.elapsed().as_secs_f64());
                return Ok(response.map(tonic::body::Body::new));
            }
            let (parts, body) = response.into_parts();
            let body = tonic::body::Body::new(CountingBody { inner: body, method, start });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body that records the RPC when its trailers pass by.
struct CountingBody<R> {
    inner: R,
    method: String,
    start: std::time::Instant,
}

impl<R> http_body::Body for CountingBody<R>
where
    R: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = R::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame.trailers_ref().and_then(grpc_code)
        {
            METRICS.rpc(&self.method, code, self.start.elapsed().as_secs_f64());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
