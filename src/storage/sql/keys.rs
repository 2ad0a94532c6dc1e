//! Access-token signing keys: `SigningKeyStore`.

/// Implements `SigningKeyStore` for a store with a `pool` field.
macro_rules! keys {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::SigningKeyStore for $store {
            #[tracing::instrument(skip_all)]
            async fn list_signing_keys(&self) -> Result<Vec<$crate::storage::SigningKeyRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT kid, algorithm, private_key, cipher_key_id, public_jwk, created_at, activates_at, retired_at \
                     FROM signing_keys ORDER BY activates_at, created_at",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn add_signing_key(
                &self,
                key: &$crate::storage::SigningKeyRow,
                retire: Option<&str>,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    if let Some(kid) = retire {
                        let done = sqlx::query("UPDATE signing_keys SET retired_at = $2 WHERE kid = $1 AND retired_at IS NULL")
                            .bind(kid)
                            .bind(key.activates_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        // Another replica rotated first: keep its key.
                        if done.rows_affected() == 0 {
                            return Ok(false);
                        }
                    } else {
                        let (current,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL")
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(classify)?;
                        if current > 0 {
                            return Ok(false);
                        }
                    }
                    sqlx::query(
                        "INSERT INTO signing_keys (kid, algorithm, private_key, cipher_key_id, public_jwk, created_at, activates_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&key.kid)
                    .bind(&key.algorithm)
                    .bind(&key.private_key)
                    .bind(&key.cipher_key_id)
                    .bind(&key.public_jwk)
                    .bind(key.created_at)
                    .bind(key.activates_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    tx.commit().await.map_err(classify)?;
                    Ok(true)
                }))
                .await
            }
        }
    };
}
pub(crate) use keys;
