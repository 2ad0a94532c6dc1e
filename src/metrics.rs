//! Prometheus metrics, served as text at `/metrics` on the HTTP port. Process-wide, like the
//! process they describe.

use std::sync::LazyLock;

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
        }
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
    pub fn render(&self, hash_queue: usize, pool: (u32, u32, u32)) -> String {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.hash_queue.set(to_i64(hash_queue as u64));
        self.pool_size.set(i64::from(pool.0));
        self.pool_idle.set(i64::from(pool.1));
        self.pool_max.set(i64::from(pool.2));
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
