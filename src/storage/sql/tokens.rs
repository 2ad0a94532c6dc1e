//! Single-use email tokens: `TokenStore`.

/// Implements `TokenStore` for a store with a `pool` field.
macro_rules! tokens {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::TokenStore for $store {
            #[tracing::instrument(skip_all)]
            async fn issue_token(
                &self,
                t: &$crate::storage::NewVerificationToken,
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        sqlx::query(
                            "DELETE FROM verification_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
                        )
                        .bind(t.user_id)
                        .bind(t.purpose)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        insert_token(&mut *tx, t).await?;
                        tx.commit().await.map_err(classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn find_live_token(
                &self,
                token_hash: &[u8],
                purposes: (&str, &str),
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::RedeemedToken>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT user_id, purpose, new_email FROM verification_tokens WHERE token_hash = $1 \
                     AND (purpose = $2 OR purpose = $3) AND used_at IS NULL AND expires_at > $4",
                )
                .bind(token_hash)
                .bind(purposes.0)
                .bind(purposes.1)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn redeem_token(
                &self,
                token_hash: &[u8],
                purposes: (&str, &str),
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::RedeemedToken>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "UPDATE verification_tokens SET used_at = $4 WHERE token_hash = $1 \
                     AND (purpose = $2 OR purpose = $3) AND used_at IS NULL AND expires_at > $4 \
                     RETURNING user_id, purpose, new_email",
                )
                .bind(token_hash)
                .bind(purposes.0)
                .bind(purposes.1)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_stale_tokens(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM verification_tokens WHERE expires_at <= $1 OR used_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use tokens;
