//! Authorization-code flows in progress: `OAuthStateStore`.

/// Implements `OAuthStateStore` for a store with a `pool` field.
macro_rules! oauth_states {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::OAuthStateStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_oauth_state(
                &self,
                s: &$crate::storage::OAuthStateRow,
            ) -> Result<(), $crate::storage::StoreError> {
                sqlx::query(
                    "INSERT INTO oauth_states (state_hash, provider, redirect_uri, pkce_verifier_enc, key_id, \
                     nonce_hash, link_user_id, created_at, expires_at, used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&s.state_hash)
                .bind(&s.provider)
                .bind(&s.redirect_uri)
                .bind(&s.pkce_verifier_enc)
                .bind(&s.key_id)
                .bind(&s.nonce_hash)
                .bind(s.link_user_id)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.used_at)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn consume_oauth_state(
                &self,
                state_hash: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::OAuthStateRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "UPDATE oauth_states SET used_at = $2 WHERE state_hash = $1 AND used_at IS NULL \
                     RETURNING state_hash, provider, redirect_uri, pkce_verifier_enc, key_id, nonce_hash, \
                     link_user_id, created_at, expires_at, used_at",
                )
                .bind(state_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_expired_oauth_states(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM oauth_states WHERE expires_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use oauth_states;
