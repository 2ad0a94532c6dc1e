//! Consent records, the data export, privacy figures and client-data retention: `PrivacyStore`.

/// Implements `PrivacyStore` for a store with a `pool` field.
macro_rules! privacy {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::PrivacyStore for $store {
            #[tracing::instrument(skip_all)]
            async fn append_consent(&self, c: &$crate::storage::ConsentRow) -> Result<(), $crate::storage::StoreError> {
                insert_consent(&self.pool, c).await
            }

            #[tracing::instrument(skip_all)]
            async fn list_consent_records(
                &self,
                user_id: uuid::Uuid,
                before_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::storage::ConsentRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::consent_columns!(),
                    " FROM consent_records WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ))
                .bind(user_id)
                .bind(before_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn latest_consents(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Vec<$crate::storage::ConsentRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::consent_columns!(),
                    " FROM consent_records c WHERE user_id = $1 AND seq = \
                     (SELECT MAX(seq) FROM consent_records l WHERE l.user_id = c.user_id AND l.purpose = c.purpose)"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn export_user(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::UserExportRows>, $crate::storage::StoreError> {
                use $crate::storage::classify;
                // One transaction: the tables agree with each other.
                $crate::storage::retry_aborted(|| Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let user: Option<$crate::storage::AdminUserRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::user_columns!(),
                        ", disabled_at FROM users WHERE id = $1"
                    ))
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let Some(user) = user else { return Ok(None) };
                    let (has_password, failed_sign_ins, locked_until): (
                        bool,
                        i32,
                        Option<chrono::DateTime<chrono::Utc>>,
                    ) = sqlx::query_as(
                        "SELECT password_hash IS NOT NULL, failed_sign_ins, locked_until FROM users WHERE id = $1",
                    )
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let profile = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::profile_columns!(),
                        " FROM profiles WHERE user_id = $1"
                    ))
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let sessions = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::session_columns!(),
                        " FROM sessions WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let accounts = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::account_columns!(),
                        " FROM accounts WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let email_tokens = sqlx::query_as(
                        "SELECT id, purpose, new_email, created_at, expires_at, used_at FROM verification_tokens \
                         WHERE user_id = $1 ORDER BY created_at, id",
                    )
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let oauth_states = sqlx::query_as(
                        "SELECT state_hash, provider, redirect_uri, pkce_verifier_enc, key_id, nonce_hash, \
                         link_user_id, created_at, expires_at, used_at FROM oauth_states WHERE link_user_id = $1 \
                         ORDER BY created_at",
                    )
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let consent_records = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::consent_columns!(),
                        " FROM consent_records WHERE user_id = $1 ORDER BY seq"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let audit_events = sqlx::query_as(
                        "SELECT id, user_id, event, outcome, reason, ip_address, user_agent, created_at \
                         FROM audit_events WHERE user_id = $1 ORDER BY created_at, id",
                    )
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let revocations = sqlx::query_as(
                        "SELECT id, session_id, user_id, reason, created_at FROM revocations WHERE user_id = $1 ORDER BY id",
                    )
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let user_changes =
                        sqlx::query_as("SELECT id, user_id, created_at FROM user_changes WHERE user_id = $1 ORDER BY id")
                            .bind(user_id)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(classify)?;
                    let factors = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::factors::factor_columns!(),
                        " FROM factors WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let recovery_codes = sqlx::query_as(
                        "SELECT id, created_at, used_at FROM recovery_codes WHERE user_id = $1 ORDER BY created_at, id",
                    )
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let challenges = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::factors::challenge_columns!(),
                        " FROM second_factor_challenges WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    let ceremonies = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::storage::sql::factors::ceremony_columns!(),
                        " FROM passkey_ceremonies WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                    tx.commit().await.map_err(classify)?;
                    Ok(Some($crate::storage::UserExportRows {
                        factors,
                        recovery_codes,
                        challenges,
                        ceremonies,
                        user,
                        has_password,
                        failed_sign_ins,
                        locked_until,
                        profile,
                        sessions,
                        accounts,
                        email_tokens,
                        oauth_states,
                        consent_records,
                        audit_events,
                        revocations,
                        user_changes,
                    }))
                }))
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn consent_counts(&self) -> Result<Vec<$crate::storage::ConsentCount>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT c.purpose, c.policy_version, COUNT(*) AS users FROM consent_records c \
                     WHERE c.granted AND c.seq = (SELECT MAX(seq) FROM consent_records l \
                     WHERE l.user_id = c.user_id AND l.purpose = c.purpose) \
                     GROUP BY c.purpose, c.policy_version",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn count_users(&self) -> Result<i64, $crate::storage::StoreError> {
                sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn count_audit_events(
                &self,
                event: &str,
                since: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> Result<i64, $crate::storage::StoreError> {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM audit_events WHERE event = $1 AND outcome = 'success' \
                     AND created_at >= $2 AND created_at <= $3",
                )
                .bind(event)
                .bind(since)
                .bind(until)
                .fetch_one(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn unredacted_clients(
                &self,
                table: $crate::storage::ClientDataTable,
                before: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<Vec<(uuid::Uuid, Option<String>)>, $crate::storage::StoreError> {
                let sql = format!(
                    "SELECT id, ip_address FROM {} WHERE NOT client_redacted AND created_at < $1 LIMIT $2",
                    table.name()
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn redact_client(
                &self,
                table: $crate::storage::ClientDataTable,
                id: uuid::Uuid,
                ip_address: Option<&str>,
            ) -> Result<(), $crate::storage::StoreError> {
                let sql = format!(
                    "UPDATE {} SET ip_address = $2, user_agent = NULL, client_redacted = true \
                     WHERE id = $1 AND NOT client_redacted",
                    table.name()
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(ip_address)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(())
            }
        }
    };
}
pub(crate) use privacy;
