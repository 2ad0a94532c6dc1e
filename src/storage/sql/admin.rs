//! Operator views of users: `AdminStore`.

/// Implements `AdminStore` for a store with a `pool` field.
macro_rules! admin {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::AdminStore for $store {
            #[tracing::instrument(skip_all)]
            async fn list_users(
                &self,
                after: (chrono::DateTime<chrono::Utc>, uuid::Uuid),
                email_contains: &str,
                limit: i64,
            ) -> Result<Vec<$crate::storage::AdminUserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::user_columns!(),
                    ", disabled_at FROM users \
                     WHERE (created_at > $1 OR (created_at = $1 AND id > $2)) AND email LIKE $3 \
                     ORDER BY created_at, id LIMIT $4"
                ))
                .bind(after.0)
                .bind(after.1)
                .bind(format!(
                    "%{}%",
                    email_contains.replace('\\', "").replace('%', "").replace('_', "").to_lowercase()
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn admin_user(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::AdminUserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::user_columns!(),
                    ", disabled_at FROM users WHERE id = $1"
                ))
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn set_disabled(
                &self,
                user_id: uuid::Uuid,
                disabled_at: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        let done = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
                            .bind(user_id)
                            .bind(disabled_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        if done.rows_affected() == 0 {
                            return Ok(false);
                        }
                        // Disabling changes what GetSession answers; enabling has no cached session to evict.
                        if let Some(at) = disabled_at {
                            record_user_change(&mut tx, user_id, at).await?;
                        }
                        tx.commit().await.map_err(classify)?;
                        Ok(true)
                    })
                })
                .await
            }
        }
    };
}
pub(crate) use admin;
