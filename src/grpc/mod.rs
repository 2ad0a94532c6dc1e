//! Transport: tonic services, health, reflection, TLS, and the per-RPC tracing and metrics
//! layers. Knows proto and the domain; never SQL.

pub mod admin;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod factor;
pub mod health;
pub mod metadata;
pub mod profile;
pub mod service_auth;
pub mod status;
pub mod token;
pub mod transport_status;

use std::{future::Future, sync::Arc, time::Duration};

use ipnet::IpNet;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tower_http::trace::TraceLayer;

pub use admin::AdminApi;
pub use auth::AuthApi;
pub use factor::FactorApi;
pub use profile::ProfileApi;
pub use service_auth::ServiceAuth;
pub use token::TokenApi;

use crate::{
    domain::{
        Auth, OAuth, Profiles, Recovery, admin::Admin, factors::Factors, mesh::Mesh, privacy::Privacy,
        revocations::RevocationHub,
    },
    metrics::RpcMetricsLayer,
    net::{CallTrackingLayer, ConnectionLimits, IdleRule},
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{
            admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
            factor_service_server::FactorServiceServer, profile_service_server::ProfileServiceServer,
            token_service_server::TokenServiceServer,
        },
    },
    telemetry,
    tls::ReloadingTls,
};

/// What the gRPC server needs.
pub struct GrpcSettings {
    /// Serve reflection.
    pub reflection: bool,
    /// Largest request message.
    pub max_request_bytes: usize,
    /// Server-side bound on any request.
    pub request_timeout: Duration,
    /// Peers whose forwarded client metadata is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// TLS, when configured.
    pub tls: Option<Arc<ReloadingTls>>,
    /// Connection cap and idle timeout.
    pub limits: ConnectionLimits,
    /// Most calls in progress on one connection.
    pub max_streams_per_connection: u32,
    /// Interval of HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
}

/// The domain services behind the gRPC ones.
pub struct Services {
    /// Accounts and sessions.
    pub auth: Arc<Auth>,
    /// Verification, reset and email change.
    pub recovery: Arc<Recovery>,
    /// Profiles.
    pub profiles: Arc<Profiles>,
    /// Sign-in with identity providers.
    pub oauth: Arc<OAuth>,
    /// Access tokens and introspection.
    pub mesh: Arc<Mesh>,
    /// Operator actions.
    pub admin: Arc<Admin>,
    /// The revocation feed.
    pub revocations: Arc<RevocationHub>,
    /// Service credentials.
    pub service_auth: Arc<ServiceAuth>,
    /// Data exports.
    pub privacy: Arc<Privacy>,
    /// Second factors.
    pub factors: Arc<Factors>,
}

/// Serves every service on `listener` until `shutdown` resolves, then lets in-flight calls
/// finish.
pub async fn serve(
    listener: TcpListener,
    settings: GrpcSettings,
    services: Services,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let trusted: Arc<[IpNet]> = settings.trusted_proxies.into();
    let limit = settings.max_request_bytes;
    let auth_api = AuthServiceServer::new(AuthApi::new(
        Arc::clone(&services.auth),
        services.recovery,
        services.oauth,
        services.privacy,
        Arc::clone(&services.factors),
        Arc::clone(&trusted),
    ))
    .max_decoding_message_size(limit);
    let factor_api =
        FactorServiceServer::new(FactorApi::new(Arc::clone(&services.auth), services.factors, Arc::clone(&trusted)))
            .max_decoding_message_size(limit);
    let profile_api =
        ProfileServiceServer::new(ProfileApi::new(Arc::clone(&services.auth), services.profiles, Arc::clone(&trusted)))
            .max_decoding_message_size(limit);
    let token_api = TokenServiceServer::new(TokenApi::new(
        services.auth,
        services.mesh,
        services.revocations,
        Arc::clone(&services.service_auth),
    ))
    .max_decoding_message_size(limit);
    let admin_api = AdminServiceServer::new(AdminApi::new(services.admin, services.service_auth, trusted))
        .max_decoding_message_size(limit);

    let (reflection_v1, reflection_v1alpha) = if settings.reflection {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc.BadRequest and RetryInfo, so that grpcurl can print error details.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        // grpcurl asks for v1alpha, grpcio-reflection and newer tools for v1: serve both.
        (builder().build_v1().ok(), builder().build_v1alpha().ok())
    } else {
        (None, None)
    };

    let trace = TraceLayer::new_for_grpc()
        .make_span_with(|req: &http::Request<_>| telemetry::rpc_span(req))
        .on_request(())
        .on_response(|res: &http::Response<_>, latency: Duration, span: &tracing::Span| {
            telemetry::record_rpc_end(Some(res.headers()), latency, span)
        })
        .on_eos(|trailers: Option<&http::HeaderMap>, latency: Duration, span: &tracing::Span| {
            telemetry::record_rpc_end(trailers, latency, span)
        })
        .on_failure(());

    // The request deadline is applied by the innermost layer rather than by tonic's
    // `Server::timeout`, so that it answers DEADLINE_EXCEEDED and is traced and counted.
    let statuses = transport_status::TransportStatusLayer {
        request_timeout: settings.request_timeout,
        max_request_bytes: settings.max_request_bytes,
    };
    let router = Server::builder()
        // Bounds what one connection can hold: abandoned streams beyond this wait instead of
        // piling up, and a burst of resets is answered with GOAWAY (hyper's defaults).
        .max_concurrent_streams(settings.max_streams_per_connection)
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(64 * 1024)
        // A request is at most GATEHOUSE_MAX_REQUEST_BYTES (64 KiB by default): what a
        // connection buffers for unread requests stays within these windows.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        // Dead peers are noticed, long-lived streams (WatchRevocations) included.
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(CallTrackingLayer)
        .layer(RpcMetricsLayer)
        .layer(trace)
        .layer(statuses)
        .add_service(health)
        .add_service(auth_api)
        .add_service(profile_api)
        .add_service(token_api)
        .add_service(admin_api)
        .add_service(factor_api)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);
    let conns = crate::net::incoming(listener, settings.limits, IdleRule::NoCalls);
    match settings.tls {
        Some(tls) => router.serve_with_incoming_shutdown(tls.incoming(conns), shutdown).await,
        None => router.serve_with_incoming_shutdown(conns, shutdown).await,
    }
}
