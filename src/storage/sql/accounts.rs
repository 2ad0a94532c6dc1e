//! Accounts at identity providers: `AccountStore`.

/// Implements `AccountStore` for a store with a `pool` field.
macro_rules! accounts {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::AccountStore for $store {
            #[tracing::instrument(skip_all)]
            async fn find_account(
                &self,
                provider: &str,
                provider_account_id: &str,
            ) -> Result<Option<$crate::storage::AccountRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::account_columns!(),
                    " FROM accounts WHERE provider = $1 AND provider_account_id = $2"
                ))
                .bind(provider)
                .bind(provider_account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn find_user_by_email(
                &self,
                email: &str,
            ) -> Result<Option<$crate::storage::UserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::user_columns!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn create_user_with_account(
                &self,
                new: &$crate::storage::NewOAuthUser,
                account: &$crate::storage::NewAccount,
            ) -> Result<$crate::storage::UserRow, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let user = &new.user;
                    let row = sqlx::query_as::<_, $crate::storage::UserRow>(concat!(
                        "INSERT INTO users (id, email, name, image, email_verified, password_hash, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
                        $crate::storage::sql::user_columns!()
                    ))
                    .bind(user.id)
                    .bind(&user.email)
                    .bind(&user.name)
                    .bind(&new.image)
                    .bind(new.email_verified)
                    .bind(&user.password_hash)
                    .bind(user.now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                    insert_account(&mut *tx, account).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(row)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn create_account(
                &self,
                account: &$crate::storage::NewAccount,
            ) -> Result<$crate::storage::AccountRow, $crate::storage::StoreError> {
                insert_account(&self.pool, account).await
            }

            #[tracing::instrument(skip_all)]
            async fn update_account_tokens(
                &self,
                account_id: uuid::Uuid,
                email: Option<&str>,
                email_verified: bool,
                t: &$crate::storage::AccountTokens,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE accounts SET email = $2, email_verified = $3, access_token_enc = $4, \
                     refresh_token_enc = $5, id_token_enc = $6, token_key_id = $7, \
                     access_token_expires_at = $8, scopes = $9, updated_at = $10 WHERE id = $1",
                )
                .bind(account_id)
                .bind(email)
                .bind(email_verified)
                .bind(&t.access_token_enc)
                .bind(&t.refresh_token_enc)
                .bind(&t.id_token_enc)
                .bind(&t.token_key_id)
                .bind(t.access_token_expires_at)
                .bind(&t.scopes)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                if done.rows_affected() == 0 { Err($crate::storage::StoreError::NotFound) } else { Ok(()) }
            }

            #[tracing::instrument(skip_all)]
            async fn list_accounts(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Vec<$crate::storage::AccountRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::account_columns!(),
                    " FROM accounts WHERE user_id = $1 ORDER BY created_at, id"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn unlink_account(
                &self,
                user_id: uuid::Uuid,
                provider: &str,
                provider_account_id: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::storage::Unlinked, $crate::storage::StoreError> {
                use $crate::storage::{Unlinked, classify};
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    // Writing the user's row first takes its lock (PostgreSQL) or the write lock
                    // (SQLite), so two unlinks of a user's last two accounts cannot both pass.
                    let locked = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
                        .bind(user_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    if locked.rows_affected() == 0 {
                        return Ok(Unlinked::NotFound);
                    }
                    let (password_hash,): (Option<String>,) =
                        sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
                            .bind(user_id)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(classify)?;
                    let (accounts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts WHERE user_id = $1")
                        .bind(user_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(classify)?;
                    let target: Option<(uuid::Uuid,)> = sqlx::query_as(
                        "SELECT id FROM accounts WHERE user_id = $1 AND provider = $2 AND provider_account_id = $3",
                    )
                    .bind(user_id)
                    .bind(provider)
                    .bind(provider_account_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let Some((account_id,)) = target else {
                        return Ok(Unlinked::NotFound);
                    };
                    if password_hash.is_none() && accounts <= 1 {
                        return Ok(Unlinked::LastCredential);
                    }
                    sqlx::query("DELETE FROM accounts WHERE id = $1")
                        .bind(account_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    record_user_change(&mut tx, user_id, now).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(Unlinked::Removed)
                }))
                .await
            }
        }

        async fn insert_account<'e, E>(
            executor: E,
            a: &$crate::storage::NewAccount,
        ) -> Result<$crate::storage::AccountRow, $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
        {
            sqlx::query_as(concat!(
                "INSERT INTO accounts (id, user_id, provider, provider_account_id, email, \
                 email_verified, access_token_enc, refresh_token_enc, id_token_enc, token_key_id, \
                 access_token_expires_at, scopes, created_at, updated_at, proven) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) RETURNING ",
                $crate::storage::sql::account_columns!()
            ))
            .bind(a.id)
            .bind(a.user_id)
            .bind(&a.provider)
            .bind(&a.provider_account_id)
            .bind(&a.email)
            .bind(a.email_verified)
            .bind(&a.tokens.access_token_enc)
            .bind(&a.tokens.refresh_token_enc)
            .bind(&a.tokens.id_token_enc)
            .bind(&a.tokens.token_key_id)
            .bind(a.tokens.access_token_expires_at)
            .bind(&a.tokens.scopes)
            .bind(a.now)
            .bind(a.proven)
            .fetch_one(executor)
            .await
            .map_err($crate::storage::classify)
        }
    };
}
pub(crate) use accounts;
