//! The audit log: `AuditStore`.

/// Implements `AuditStore` for a store with a `pool` field.
macro_rules! audit {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::AuditStore for $store {
            #[tracing::instrument(skip_all)]
            async fn append_audit(&self, e: &$crate::storage::AuditRow) -> Result<(), $crate::storage::StoreError> {
                sqlx::query(
                    "INSERT INTO audit_events (id, user_id, event, outcome, reason, ip_address, user_agent, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(e.id)
                .bind(e.user_id)
                .bind(&e.event)
                .bind(&e.outcome)
                .bind(&e.reason)
                .bind(&e.ip_address)
                .bind(&e.user_agent)
                .bind(e.created_at)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn list_audit(
                &self,
                user_id: uuid::Uuid,
                before: (chrono::DateTime<chrono::Utc>, uuid::Uuid),
                limit: i64,
            ) -> Result<Vec<$crate::storage::AuditRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT id, user_id, event, outcome, reason, ip_address, user_agent, created_at \
                     FROM audit_events WHERE user_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                )
                .bind(user_id)
                .bind(before.0)
                .bind(before.1)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn prune_audit(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use audit;
