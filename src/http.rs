//! The plain-HTTP side port: the JWK Set and discovery document that JWT verifiers (Envoy,
//! Istio, any library) fetch, and Prometheus metrics.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    domain::{Auth, core::Core, keys::KeyRing},
    metrics::METRICS,
    net::{AxumListener, ConnectionLimits},
};

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Signing keys.
    pub keys: Arc<KeyRing>,
    /// For the hash-queue gauge.
    pub auth: Arc<Auth>,
    /// For the pool gauges.
    pub core: Arc<Core>,
}

async fn jwks(State(state): State<HttpState>) -> impl IntoResponse {
    // Verifiers may cache for the configured max-age: new keys are published at least that long
    // (plus a key check interval) before they sign.
    let max_age = state.keys.config().jwks_max_age.num_seconds().max(0);
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json")), (header::CACHE_CONTROL, cache)],
        state.keys.jwks_json().await,
    )
}

async fn discovery(State(state): State<HttpState>) -> impl IntoResponse {
    let config = state.keys.config();
    let issuer = config.issuer.trim_end_matches('/');
    let mut algorithms = vec![config.algorithm.as_str()];
    if config.hs256_secret.is_some() {
        algorithms = vec!["HS256"];
    }
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": algorithms,
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "email", "email_verified", "name"],
    });
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let cache = state.core.revocations().cache();
    let body = METRICS.render(
        state.auth.hasher().queue_depth(),
        state.core.pool_stats(),
        (cache.len(), cache.feed_lag().as_secs_f64()),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
}

/// Serves the side port until `shutdown` resolves, within the same connection limits as the
/// gRPC port.
pub async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(AxumListener::new(listener, limits)?, router).with_graceful_shutdown(shutdown).await
}
