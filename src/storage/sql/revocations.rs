//! The revocation and user-change feeds, and session liveness: `RevocationStore`.

/// Implements `RevocationStore` for a store with a `pool` field.
macro_rules! revocations {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::RevocationStore for $store {
            #[tracing::instrument(skip_all)]
            async fn revocations_after(
                &self,
                after_id: i64,
                limit: i64,
            ) -> Result<Vec<$crate::storage::RevocationRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT id, session_id, user_id, reason, created_at FROM revocations WHERE id > $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn last_revocation_id(&self) -> Result<i64, $crate::storage::StoreError> {
                let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM revocations")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(id.unwrap_or(0))
            }

            #[tracing::instrument(skip_all)]
            async fn user_changes_after(
                &self,
                after_id: i64,
                limit: i64,
            ) -> Result<Vec<$crate::storage::UserChangeRow>, $crate::storage::StoreError> {
                sqlx::query_as("SELECT id, user_id, created_at FROM user_changes WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn last_user_change_id(&self) -> Result<i64, $crate::storage::StoreError> {
                let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM user_changes")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(id.unwrap_or(0))
            }

            #[tracing::instrument(skip_all)]
            async fn prune_revocations(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM revocations WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                sqlx::query("DELETE FROM user_changes WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }

            #[tracing::instrument(skip_all)]
            async fn live_session(
                &self,
                session_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::SessionRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.last_active_at, s.ip_address, s.user_agent, \
                     s.aal, s.amr \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND u.disabled_at IS NULL",
                )
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }
        }
    };
}
pub(crate) use revocations;
