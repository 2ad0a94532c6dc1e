//! Sessions: `SessionStore`.

/// Implements `SessionStore` for a store with a `pool` field.
macro_rules! sessions {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::SessionStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_session(
                &self,
                s: &$crate::storage::NewSession,
            ) -> Result<$crate::storage::SessionRow, $crate::storage::StoreError> {
                insert_session(&self.pool, s).await
            }

            #[tracing::instrument(skip_all)]
            async fn find_session(
                &self,
                token_hash: &[u8],
            ) -> Result<Option<$crate::storage::SessionUserRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.last_active_at, s.ip_address, \
                     s.user_agent, s.aal, s.amr, u.email AS u_email, u.name AS u_name, u.image AS u_image, \
                     u.email_verified AS u_email_verified, u.created_at AS u_created_at, \
                     u.updated_at AS u_updated_at \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND u.disabled_at IS NULL",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn touch_session(
                &self,
                session_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
                due_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE sessions SET last_active_at = $2, updated_at = $2 \
                     WHERE id = $1 AND last_active_at <= $3",
                )
                .bind(session_id)
                .bind(now)
                .bind(due_before)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn list_sessions(
                &self,
                user_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::storage::SessionRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::sql::session_columns!(), " FROM sessions WHERE user_id = $1 AND expires_at > $2 \
                     ORDER BY last_active_at DESC, id"))
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_session(
                &self,
                user_id: uuid::Uuid,
                session_id: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let ended = end_sessions(&mut tx, user_id, Sessions::One(session_id), revoked).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(ended > 0)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn delete_other_sessions(
                &self,
                user_id: uuid::Uuid,
                keep: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let ended = end_sessions(&mut tx, user_id, Sessions::AllBut(keep), revoked).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(ended)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn delete_all_sessions(
                &self,
                user_id: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let ended = end_sessions(&mut tx, user_id, Sessions::All, revoked).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(ended)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn delete_expired_sessions(
                &self,
                absolute_before: chrono::DateTime<chrono::Utc>,
                idle_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_active_at <= $2")
                    .bind(absolute_before)
                    .bind(idle_before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use sessions;
