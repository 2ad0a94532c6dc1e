//! Transport: tonic services, health, reflection and the per-RPC tracing layer. Knows proto
//! and the domain; never SQL.

pub mod auth;
pub mod convert;
pub mod health;
pub mod metadata;
pub mod profile;
pub mod status;

use std::{future::Future, sync::Arc, time::Duration};

use ipnet::IpNet;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tower_http::trace::TraceLayer;

pub use auth::AuthApi;
pub use profile::ProfileApi;

use crate::{
    domain::{Auth, OAuth, Profiles},
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{auth_service_server::AuthServiceServer, profile_service_server::ProfileServiceServer},
    },
    telemetry,
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
}

/// Serves every service on `listener` until `shutdown` resolves, then lets in-flight calls
/// finish.
pub async fn serve(
    listener: TcpListener,
    settings: GrpcSettings,
    auth: Arc<Auth>,
    profiles: Arc<Profiles>,
    oauth: Arc<OAuth>,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let trusted: Arc<[IpNet]> = settings.trusted_proxies.into();
    let auth_api = AuthServiceServer::new(AuthApi::new(Arc::clone(&auth), oauth, trusted))
        .max_decoding_message_size(settings.max_request_bytes);
    let profile_api = ProfileServiceServer::new(ProfileApi::new(auth, profiles))
        .max_decoding_message_size(settings.max_request_bytes);

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

    Server::builder()
        .timeout(settings.request_timeout)
        .layer(trace)
        .add_service(health)
        .add_service(auth_api)
        .add_service(profile_api)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
}
