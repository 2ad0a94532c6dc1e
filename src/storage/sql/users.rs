//! Accounts and credentials: `UserStore`.

/// Implements `UserStore` for a store with a `pool` field.
macro_rules! users {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::UserStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_user(
                &self,
                user: &$crate::storage::NewUser,
                with: $crate::storage::SignUpRows<'_>,
            ) -> Result<($crate::storage::UserRow, Option<$crate::storage::SessionRow>), $crate::storage::StoreError>
            {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let row = sqlx::query_as::<_, $crate::storage::UserRow>(concat!(
                        "INSERT INTO users (id, email, name, email_verified, password_hash, created_at, updated_at) \
                         VALUES ($1, $2, $3, false, $4, $5, $5) RETURNING ",
                        $crate::storage::sql::user_columns!()
                    ))
                    .bind(user.id)
                    .bind(&user.email)
                    .bind(&user.name)
                    .bind(&user.password_hash)
                    .bind(user.now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                    if let Some(profile) = with.profile {
                        insert_profile(&mut *tx, profile).await?;
                    }
                    if let Some(consent) = with.consent {
                        insert_consent(&mut *tx, consent).await?;
                    }
                    if let Some(token) = with.verification {
                        insert_token(&mut *tx, token).await?;
                    }
                    let session = match with.session {
                        Some(session) => Some(insert_session(&mut *tx, session).await?),
                        None => None,
                    };
                    tx.commit().await.map_err(classify)?;
                    Ok((row, session))
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn find_credentials_by_email(
                &self,
                email: &str,
            ) -> Result<Option<$crate::storage::CredentialRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::user_columns!(),
                    ", password_hash, failed_sign_ins, locked_until, disabled_at FROM users WHERE email = $1"
                ))
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn password_hash(&self, user_id: uuid::Uuid) -> Result<Option<String>, $crate::storage::StoreError> {
                let row: Option<(Option<String>,)> = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(row.and_then(|(hash,)| hash))
            }

            #[tracing::instrument(skip_all)]
            async fn replace_password_hash(
                &self,
                user_id: uuid::Uuid,
                expected: &str,
                hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let done = sqlx::query(
                        "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2",
                    )
                    .bind(user_id)
                    .bind(expected)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    record_user_change(&mut tx, user_id, now).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(true)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn delete_user(
                &self,
                user_id: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    end_sessions(&mut tx, user_id, Sessions::All, revoked).await?;
                    let done = sqlx::query("DELETE FROM users WHERE id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    tx.commit().await.map_err(classify)?;
                    Ok(done.rows_affected() > 0)
                }))
                .await
            }
            #[tracing::instrument(skip_all)]
            async fn find_user(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::UserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::sql::user_columns!(), " FROM users WHERE id = $1"))
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn attempt_state(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::AttemptState>, $crate::storage::StoreError> {
                sqlx::query_as("SELECT failed_sign_ins, locked_until FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn take_attempt(
                &self,
                user_id: uuid::Uuid,
                seen: &$crate::storage::AttemptState,
                now: chrono::DateTime<chrono::Utc>,
                lock: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<bool, $crate::storage::StoreError> {
                // One statement: the count moves only from the value this attempt saw, so of
                // parallel attempts exactly one takes each slot, on one database or many replicas.
                let done = sqlx::query(
                    "UPDATE users SET failed_sign_ins = failed_sign_ins + 1, locked_until = COALESCE($4, locked_until) \
                     WHERE id = $1 AND failed_sign_ins = $2 AND (locked_until IS NULL OR locked_until <= $3)",
                )
                .bind(user_id)
                .bind(seen.failed_sign_ins)
                .bind(now)
                .bind(lock)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn refund_attempt(
                &self,
                user_id: uuid::Uuid,
                written: i32,
            ) -> Result<bool, $crate::storage::StoreError> {
                // Only while no other attempt came after: then any lock is the one this
                // attempt set (a lock in force would have refused it).
                let done = sqlx::query(
                    "UPDATE users SET failed_sign_ins = failed_sign_ins - 1, locked_until = NULL \
                     WHERE id = $1 AND failed_sign_ins = $2",
                )
                .bind(user_id)
                .bind(written)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn clear_failed_sign_ins(&self, user_id: uuid::Uuid) -> Result<(), $crate::storage::StoreError> {
                sqlx::query("UPDATE users SET failed_sign_ins = 0, locked_until = NULL WHERE id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn mark_email_verified(
                &self,
                user_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<String>, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    sqlx::query("UPDATE users SET email_verified = true, updated_at = $2 WHERE id = $1")
                        .bind(user_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    let removed = remove_unproven_links(&mut tx, user_id).await?;
                    record_user_change(&mut tx, user_id, now).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(removed)
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn change_email(
                &self,
                user_id: uuid::Uuid,
                new_email: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    sqlx::query("UPDATE users SET email = $2, email_verified = true, updated_at = $3 WHERE id = $1")
                        .bind(user_id)
                        .bind(new_email)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    record_user_change(&mut tx, user_id, now).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok(())
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn reset_password(
                &self,
                user_id: uuid::Uuid,
                hash: &str,
                revoked: $crate::storage::Revoked,
            ) -> Result<$crate::storage::Recovered, $crate::storage::StoreError> {
                use $crate::storage::classify;
                let now = revoked.at;
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    sqlx::query(
                        "UPDATE users SET password_hash = $2, email_verified = true, failed_sign_ins = 0, \
                         locked_until = NULL, updated_at = $3 WHERE id = $1",
                    )
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let sessions_ended = end_sessions(&mut tx, user_id, Sessions::All, revoked).await?;
                    let removed_providers = remove_unproven_links(&mut tx, user_id).await?;
                    record_user_change(&mut tx, user_id, now).await?;
                    tx.commit().await.map_err(classify)?;
                    Ok($crate::storage::Recovered { sessions_ended, removed_providers })
                }))
                .await
            }
        }
    };
}
pub(crate) use users;
