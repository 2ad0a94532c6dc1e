//! Keeps the gRPC health service truthful: SERVING only while the database answers.

use std::{sync::Arc, time::Duration};

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::storage::Store;

/// Services whose status follows the database ("" is the server as a whole).
pub const SERVICES: [&str; 5] = [
    "",
    "gatehouse.v1.AuthService",
    "gatehouse.v1.ProfileService",
    "gatehouse.v1.TokenService",
    "gatehouse.v1.AdminService",
];

/// Sets every service's status.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings the store every `interval` and reports the result; runs until aborted.
pub async fn watch_store(store: Arc<dyn Store>, reporter: HealthReporter, interval: Duration) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A hung database must not leave the status stale.
        let ok = matches!(tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()).await, Ok(Ok(())));
        let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(status) {
            if ok {
                tracing::info!(backend = store.backend(), "database answers: SERVING");
            } else {
                tracing::warn!(backend = store.backend(), "database does not answer: NOT_SERVING");
            }
            set_all(&reporter, status).await;
            last = Some(status);
        }
    }
}
