//! Keeps the gRPC health service truthful: SERVING only while the database answers.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

use tonic::server::NamedService;

use super::{admin::AdminApi, auth::AuthApi, factor::FactorApi, profile::ProfileApi, token::TokenApi};
use crate::{
    domain::core::Core,
    proto::v1::{
        admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
        factor_service_server::FactorServiceServer, profile_service_server::ProfileServiceServer,
        token_service_server::TokenServiceServer,
    },
};

/// Services whose status follows the database ("" is the server as a whole).
pub const SERVICES: [&str; 6] = [
    "",
    <AuthServiceServer<AuthApi> as NamedService>::NAME,
    <ProfileServiceServer<ProfileApi> as NamedService>::NAME,
    <TokenServiceServer<TokenApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
    <FactorServiceServer<FactorApi> as NamedService>::NAME,
];

/// Sets every service's status.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings the store every `interval` and reports the result; runs until aborted.
pub async fn watch_store(core: Arc<Core>, reporter: HealthReporter, interval: Duration) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A hung database must not leave the status stale.
        let ok =
            matches!(tokio::time::timeout(interval.max(Duration::from_secs(1)), core.check_store()).await, Ok(Ok(())));
        let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(status) {
            if ok {
                tracing::info!(backend = core.backend(), "database answers: SERVING");
            } else {
                tracing::warn!(backend = core.backend(), "database does not answer: NOT_SERVING");
            }
            set_all(&reporter, status).await;
            last = Some(status);
        }
    }
}

/// The standard health service, except that open `Watch` streams end when the server starts
/// stopping (one open watcher would otherwise hold shutdown for the whole grace period).
pub struct StoppingHealth {
    inner: HealthService,
    stopping: watch::Receiver<bool>,
}

impl StoppingHealth {
    /// Serves `reporter`'s statuses; `stopping` turns true when the server stops.
    pub fn new(reporter: HealthReporter, stopping: watch::Receiver<bool>) -> HealthServer<Self> {
        HealthServer::new(Self { inner: HealthService::from_health_reporter(reporter), stopping })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for StoppingHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
            // The watcher sees NOT_SERVING first (it is set before the stop signal), then the end.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Response::new(Box::pin(statuses.take_until(stopped)) as WatchStream))
    }
}
