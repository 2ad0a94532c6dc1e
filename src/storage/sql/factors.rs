//! Second factors, recovery codes and waiting sign-ins: `FactorStore`.

/// Columns of `FactorRow`.
macro_rules! factor_columns {
    () => {
        "id, user_id, kind, name, secret_enc, key_id, credential_id, passkey, created_at, confirmed_at, expires_at, \
         last_used_step, last_used_at"
    };
}
pub(crate) use factor_columns;

/// Implements `FactorStore` for a store with a `pool` field.
/// Columns of `ChallengeRow`.
macro_rules! challenge_columns {
    () => {
        "id, user_id, first_factor, failures, passkey_state, created_at, expires_at, used_at"
    };
}
pub(crate) use challenge_columns;

/// Columns of `CeremonyRow`.
macro_rules! ceremony_columns {
    () => {
        "id, user_id, kind, state, name, created_at, expires_at, used_at"
    };
}
pub(crate) use ceremony_columns;

macro_rules! factors {
    ($store:ty) => {
        /// Deletes the user's recovery codes, in the caller's transaction.
        async fn delete_recovery_codes(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
            user_id: uuid::Uuid,
        ) -> Result<(), $crate::storage::StoreError> {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut **tx)
                .await
                .map_err($crate::storage::classify)?;
            Ok(())
        }

        /// Replaces the user's recovery codes, in the caller's transaction.
        async fn put_recovery_codes(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
            user_id: uuid::Uuid,
            codes: &[$crate::storage::NewRecoveryCode],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::storage::StoreError> {
            delete_recovery_codes(tx, user_id).await?;
            for code in codes {
                sqlx::query("INSERT INTO recovery_codes (id, user_id, code_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(code.id)
                    .bind(user_id)
                    .bind(&code.code_hash)
                    .bind(now)
                    .execute(&mut **tx)
                    .await
                    .map_err($crate::storage::classify)?;
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::storage::FactorStore for $store {
            #[tracing::instrument(skip_all)]
            async fn put_pending_factor(
                &self,
                f: &$crate::storage::FactorRow,
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        sqlx::query("DELETE FROM factors WHERE user_id = $1 AND kind = $2 AND confirmed_at IS NULL")
                            .bind(f.user_id)
                            .bind(&f.kind)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        sqlx::query(
                            "INSERT INTO factors (id, user_id, kind, name, secret_enc, key_id, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(f.id)
                        .bind(f.user_id)
                        .bind(&f.kind)
                        .bind(&f.name)
                        .bind(&f.secret_enc)
                        .bind(&f.key_id)
                        .bind(f.created_at)
                        .bind(f.expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        tx.commit().await.map_err(classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn pending_factor(
                &self,
                user_id: uuid::Uuid,
                kind: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::FactorRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::factors::factor_columns!(),
                    " FROM factors WHERE user_id = $1 AND kind = $2 AND confirmed_at IS NULL AND expires_at > $3"
                ))
                .bind(user_id)
                .bind(kind)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn confirm_factor(
                &self,
                factor_id: uuid::Uuid,
                step: i64,
                codes: &[$crate::storage::NewRecoveryCode],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        let confirmed: Option<(uuid::Uuid,)> = sqlx::query_as(
                            "UPDATE factors SET confirmed_at = $2, expires_at = NULL, last_used_step = $3 \
                         WHERE id = $1 AND confirmed_at IS NULL AND expires_at > $2 \
                         RETURNING user_id",
                        )
                        .bind(factor_id)
                        .bind(now)
                        .bind(step)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(classify)?;
                        let Some((user_id,)) = confirmed else { return Ok(false) };
                        put_recovery_codes(&mut tx, user_id, codes, now).await?;
                        tx.commit().await.map_err(classify)?;
                        Ok(true)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn active_factors(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Vec<$crate::storage::FactorRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::factors::factor_columns!(),
                    " FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL ORDER BY confirmed_at, id"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn accept_step(
                &self,
                factor_id: uuid::Uuid,
                step: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE factors SET last_used_step = $2, last_used_at = $3 WHERE id = $1 \
                     AND confirmed_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $2)",
                )
                .bind(factor_id)
                .bind(step)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn remove_factor(
                &self,
                user_id: uuid::Uuid,
                factor_id: uuid::Uuid,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        let done = sqlx::query(
                            "DELETE FROM factors WHERE id = $1 AND user_id = $2 AND confirmed_at IS NOT NULL",
                        )
                        .bind(factor_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        if done.rows_affected() == 0 {
                            return Ok(false);
                        }
                        let (left,): (i64,) = sqlx::query_as(
                            "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
                        )
                        .bind(user_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(classify)?;
                        if left == 0 {
                            delete_recovery_codes(&mut tx, user_id).await?;
                        }
                        tx.commit().await.map_err(classify)?;
                        Ok(true)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn replace_recovery_codes(
                &self,
                user_id: uuid::Uuid,
                codes: &[$crate::storage::NewRecoveryCode],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        put_recovery_codes(&mut tx, user_id, codes, now).await?;
                        tx.commit().await.map_err(classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn use_recovery_code(
                &self,
                user_id: uuid::Uuid,
                code_hash: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(user_id)
                .bind(code_hash)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn count_recovery_codes(&self, user_id: uuid::Uuid) -> Result<i64, $crate::storage::StoreError> {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
                        .bind(user_id)
                        .fetch_one(&self.pool)
                        .await
                        .map_err($crate::storage::classify)?;
                Ok(n)
            }

            #[tracing::instrument(skip_all)]
            async fn reset_factors(&self, user_id: uuid::Uuid) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        let removed =
                            sqlx::query("DELETE FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL")
                                .bind(user_id)
                                .execute(&mut *tx)
                                .await
                                .map_err(classify)?
                                .rows_affected();
                        for sql in [
                            "DELETE FROM factors WHERE user_id = $1",
                            "DELETE FROM recovery_codes WHERE user_id = $1",
                            "DELETE FROM second_factor_challenges WHERE user_id = $1",
                        ] {
                            sqlx::query(sql).bind(user_id).execute(&mut *tx).await.map_err(classify)?;
                        }
                        tx.commit().await.map_err(classify)?;
                        Ok(removed)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn create_challenge(
                &self,
                c: &$crate::storage::ChallengeRow,
                token_hash: &[u8],
            ) -> Result<(), $crate::storage::StoreError> {
                sqlx::query(
                    "INSERT INTO second_factor_challenges (id, user_id, token_hash, first_factor, failures, \
                     passkey_state, created_at, expires_at) VALUES ($1, $2, $3, $4, 0, $5, $6, $7)",
                )
                .bind(c.id)
                .bind(c.user_id)
                .bind(token_hash)
                .bind(&c.first_factor)
                .bind(&c.passkey_state)
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn find_challenge(
                &self,
                token_hash: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::ChallengeRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::factors::challenge_columns!(),
                    " FROM second_factor_challenges WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn fail_challenge(&self, challenge_id: uuid::Uuid) -> Result<i32, $crate::storage::StoreError> {
                let failures: Option<(i32,)> = sqlx::query_as(
                    "UPDATE second_factor_challenges SET failures = failures + 1 WHERE id = $1 RETURNING failures",
                )
                .bind(challenge_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(failures.map_or(i32::MAX, |(n,)| n))
            }

            #[tracing::instrument(skip_all)]
            async fn consume_challenge(
                &self,
                challenge_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE second_factor_challenges SET used_at = $2 \
                     WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(challenge_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_expired_challenges(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::storage::StoreError> {
                let challenges = sqlx::query("DELETE FROM second_factor_challenges WHERE expires_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?
                    .rows_affected();
                let pending = sqlx::query("DELETE FROM factors WHERE confirmed_at IS NULL AND expires_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?
                    .rows_affected();
                let ceremonies = sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?
                    .rows_affected();
                Ok(challenges + pending + ceremonies)
            }

            #[tracing::instrument(skip_all)]
            async fn add_passkey(
                &self,
                f: &$crate::storage::FactorRow,
                codes: &[$crate::storage::NewRecoveryCode],
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        sqlx::query(
                            "INSERT INTO factors (id, user_id, kind, name, credential_id, passkey, created_at, \
                         confirmed_at) VALUES ($1, $2, 'passkey', $3, $4, $5, $6, $6)",
                        )
                        .bind(f.id)
                        .bind(f.user_id)
                        .bind(&f.name)
                        .bind(&f.credential_id)
                        .bind(&f.passkey)
                        .bind(f.created_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        if !codes.is_empty() {
                            put_recovery_codes(&mut tx, f.user_id, codes, f.created_at).await?;
                        }
                        tx.commit().await.map_err(classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn find_passkey(
                &self,
                credential_id: &[u8],
            ) -> Result<Option<$crate::storage::FactorRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::factors::factor_columns!(),
                    " FROM factors WHERE credential_id = $1 AND kind = 'passkey' AND confirmed_at IS NOT NULL"
                ))
                .bind(credential_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn use_passkey(
                &self,
                factor_id: uuid::Uuid,
                expected: &str,
                updated: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done =
                    sqlx::query("UPDATE factors SET passkey = $3, last_used_at = $4 WHERE id = $1 AND passkey = $2")
                        .bind(factor_id)
                        .bind(expected)
                        .bind(updated)
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn create_ceremony(
                &self,
                c: &$crate::storage::CeremonyRow,
            ) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        if let Some(user_id) = c.user_id {
                            sqlx::query(
                                "DELETE FROM passkey_ceremonies WHERE user_id = $1 AND kind = $2 AND used_at IS NULL",
                            )
                            .bind(user_id)
                            .bind(&c.kind)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        }
                        sqlx::query(
                            "INSERT INTO passkey_ceremonies (id, user_id, kind, state, name, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(c.id)
                        .bind(c.user_id)
                        .bind(&c.kind)
                        .bind(&c.state)
                        .bind(&c.name)
                        .bind(c.created_at)
                        .bind(c.expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        tx.commit().await.map_err(classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn take_registration(
                &self,
                user_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::CeremonyRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "UPDATE passkey_ceremonies SET used_at = $2 WHERE user_id = $1 AND kind = 'register' \
                     AND used_at IS NULL AND expires_at > $2 RETURNING ",
                    $crate::storage::sql::factors::ceremony_columns!()
                ))
                .bind(user_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn take_sign_in_ceremony(
                &self,
                id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::storage::CeremonyRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "UPDATE passkey_ceremonies SET used_at = $2 WHERE id = $1 AND kind = 'sign_in' \
                     AND used_at IS NULL AND expires_at > $2 RETURNING ",
                    $crate::storage::sql::factors::ceremony_columns!()
                ))
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }
        }
    };
}
pub(crate) use factors;
