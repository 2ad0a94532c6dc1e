//! Logs and traces: an `EnvFilter`, text or JSON output, OTLP export when an endpoint is set,
//! and the per-RPC span that carries the caller's W3C trace context.

use std::time::Duration;

use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

/// Flushes and stops the trace exporter when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(error)) = self.provider.take().map(|p| p.shutdown_with_timeout(Duration::from_secs(5))) {
            eprintln!("gatehouse: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber. Call once, at start.
pub fn init(config: &Config) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&config.server.log_filter)?;
    let fmt = match config.server.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).boxed(),
    };
    let provider = match &config.server.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone()).build()?;
            // OTEL_SERVICE_NAME, when set, wins over this default.
            let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "gatehouse".into());
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("gatehouse")).boxed());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one RPC, child of the caller's trace when `traceparent` is present.
pub fn rpc_span<B>(request: &http::Request<B>) -> Span {
    let span = tracing::info_span!(
        "rpc",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
        rpc.grpc.status_code = Empty,
        latency_ms = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
    // Without an OTel layer there is nothing to attach to; that is not an error.
    let _ = span.set_parent(parent);
    span
}

/// Records the outcome of an RPC on its span and logs it: failures at INFO, successes at DEBUG
/// (GetSession is called on every request of every backend).
pub fn record_rpc_end(headers_or_trailers: Option<&http::HeaderMap>, latency: Duration, span: &Span) {
    let Some(code) = headers_or_trailers
        .and_then(|h| h.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.record("rpc.grpc.status_code", code);
    span.record("latency_ms", latency_ms);
    let code_name = tonic::Code::from_i32(code);
    if code == 0 {
        tracing::debug!(parent: span, grpc.code = ?code_name, latency_ms, "rpc finished");
    } else {
        tracing::info!(parent: span, grpc.code = ?code_name, latency_ms, "rpc finished");
    }
}
