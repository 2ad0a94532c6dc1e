//! The SQL, written once. Both dialects accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`, so one macro implements the store traits for each backend's concrete pool
//! type: native types and no generic-over-`Database` bounds, without two copies of each query.

/// Implements `UserStore`, `SessionStore`, `ProfileStore`, `AccountStore` and `OAuthStateStore`
/// for a struct with a `pool` field.
macro_rules! impl_queries {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::UserStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_user(
                &self,
                user: &$crate::storage::NewUser,
                with: $crate::storage::SignUpRows<'_>,
            ) -> Result<($crate::storage::UserRow, Option<$crate::storage::SessionRow>), $crate::storage::StoreError> {
                use $crate::storage::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let row = sqlx::query_as::<_, $crate::storage::UserRow>(concat!("INSERT INTO users (id, email, name, email_verified, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, false, $4, $5, $5) RETURNING ", $crate::storage::queries::user_columns!()))
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
                if let Some(token) = with.verification {
                    insert_token(&mut *tx, token).await?;
                }
                let session = match with.session {
                    Some(session) => Some(insert_session(&mut *tx, session).await?),
                    None => None,
                };
                tx.commit().await.map_err(classify)?;
                Ok((row, session))
            }

            #[tracing::instrument(skip_all)]
            async fn find_credentials_by_email(
                &self,
                email: &str,
            ) -> Result<Option<$crate::storage::CredentialRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::user_columns!(), ", password_hash, failed_sign_ins, locked_until, disabled_at FROM users WHERE email = $1"))
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
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2",
                )
                .bind(user_id)
                .bind(expected)
                .bind(hash)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_user(
                &self,
                user_id: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<bool, $crate::storage::StoreError> {
                use $crate::storage::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let ended: Vec<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 RETURNING id, user_id")
                        .bind(user_id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(classify)?;
                record_revocations(&mut tx, &ended, revoked).await?;
                let done = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(done.rows_affected() > 0)
            }
            #[tracing::instrument(skip_all)]
            async fn find_user(&self, user_id: uuid::Uuid) -> Result<Option<$crate::storage::UserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::user_columns!(), " FROM users WHERE id = $1"))
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
                let mut tx = self.pool.begin().await.map_err(classify)?;
                sqlx::query("UPDATE users SET email_verified = true, updated_at = $2 WHERE id = $1")
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let removed = remove_unproven_links(&mut tx, user_id).await?;
                tx.commit().await.map_err(classify)?;
                Ok(removed)
            }

            #[tracing::instrument(skip_all)]
            async fn change_email(
                &self,
                user_id: uuid::Uuid,
                new_email: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                sqlx::query("UPDATE users SET email = $2, email_verified = true, updated_at = $3 WHERE id = $1")
                    .bind(user_id)
                    .bind(new_email)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(())
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
                let ended: Vec<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 RETURNING id, user_id")
                        .bind(user_id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(classify)?;
                record_revocations(&mut tx, &ended, revoked).await?;
                let removed_providers = remove_unproven_links(&mut tx, user_id).await?;
                tx.commit().await.map_err(classify)?;
                Ok($crate::storage::Recovered { sessions_ended: ended.len() as u64, removed_providers })
            }
        }

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
                     s.user_agent, u.email AS u_email, u.name AS u_name, u.image AS u_image, \
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
            ) -> Result<(), $crate::storage::StoreError> {
                // Never move it backwards if two replicas touch at once.
                sqlx::query(
                    "UPDATE sessions SET last_active_at = $2, updated_at = $2 \
                     WHERE id = $1 AND last_active_at < $2",
                )
                .bind(session_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn list_sessions(
                &self,
                user_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::storage::SessionRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::session_columns!(), " FROM sessions WHERE user_id = $1 AND expires_at > $2 \
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
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let ended: Vec<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id, user_id")
                        .bind(session_id)
                        .bind(user_id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(classify)?;
                record_revocations(&mut tx, &ended, revoked).await?;
                tx.commit().await.map_err(classify)?;
                Ok(!ended.is_empty())
            }

            #[tracing::instrument(skip_all)]
            async fn delete_other_sessions(
                &self,
                user_id: uuid::Uuid,
                keep: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let ended: Vec<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id, user_id")
                        .bind(user_id)
                        .bind(keep)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(classify)?;
                record_revocations(&mut tx, &ended, revoked).await?;
                tx.commit().await.map_err(classify)?;
                Ok(ended.len() as u64)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_all_sessions(
                &self,
                user_id: uuid::Uuid,
                revoked: $crate::storage::Revoked,
            ) -> Result<u64, $crate::storage::StoreError> {
                use $crate::storage::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let ended: Vec<(uuid::Uuid, uuid::Uuid)> =
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 RETURNING id, user_id")
                        .bind(user_id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(classify)?;
                record_revocations(&mut tx, &ended, revoked).await?;
                tx.commit().await.map_err(classify)?;
                Ok(ended.len() as u64)
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

        #[async_trait::async_trait]
        impl $crate::storage::ProfileStore for $store {
            #[tracing::instrument(skip_all)]
            async fn get_profile(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::ProfileRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::profile_columns!(), " FROM profiles WHERE user_id = $1"))
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn insert_profile(&self, p: &$crate::storage::ProfileRow) -> Result<(), $crate::storage::StoreError> {
                insert_profile(&self.pool, p).await
            }

            #[tracing::instrument(skip_all)]
            async fn update_profile(
                &self,
                p: &$crate::storage::ProfileRow,
                expected_version: i64,
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query(
                    "UPDATE profiles SET programming_level = $2, programming_languages = $3, \
                     ai_knowledge_level = $4, hardware_experience = $5, learning_style = $6, \
                     software_background = $7, hardware_background = $8, role = $9, interests = $10, \
                     onboarding_completed = $11, consent_given = $12, consent_updated_at = $13, \
                     updated_at = $14, version = version + 1 WHERE user_id = $1 AND version = $15",
                )
                .bind(p.user_id)
                .bind(&p.programming_level)
                .bind(&p.programming_languages)
                .bind(&p.ai_knowledge_level)
                .bind(&p.hardware_experience)
                .bind(&p.learning_style)
                .bind(&p.software_background)
                .bind(&p.hardware_background)
                .bind(&p.role)
                .bind(&p.interests)
                .bind(p.onboarding_completed)
                .bind(p.consent_given)
                .bind(p.consent_updated_at)
                .bind(p.updated_at)
                .bind(expected_version)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::TokenStore for $store {
            #[tracing::instrument(skip_all)]
            async fn issue_token(&self, t: &$crate::storage::NewVerificationToken) -> Result<(), $crate::storage::StoreError> {
                use $crate::storage::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                sqlx::query("DELETE FROM verification_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
                    .bind(t.user_id)
                    .bind(t.purpose)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                insert_token(&mut *tx, t).await?;
                tx.commit().await.map_err(classify)
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

        #[async_trait::async_trait]
        impl $crate::storage::AuditStore for $store {
            #[tracing::instrument(skip_all)]
            async fn append_audit(&self, e: &$crate::storage::AuditRow) -> Result<(), $crate::storage::StoreError> {
                sqlx::query(
                    "INSERT INTO audit_events (id, user_id, event, outcome, reason, ip_address, user_agent, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(e.id)
                .bind(e.user_id)
                .bind(&e.event)
                .bind(&e.outcome)
                .bind(&e.reason)
                .bind(&e.ip_address)
                .bind(&e.user_agent)
                .bind(e.created_at)
                .execute(&self.pool)
                .await
                .map_err($crate::storage::classify)?;
                Ok(())
            }

            #[tracing::instrument(skip_all)]
            async fn list_audit(
                &self,
                user_id: uuid::Uuid,
                before: (chrono::DateTime<chrono::Utc>, uuid::Uuid),
                limit: i64,
            ) -> Result<Vec<$crate::storage::AuditRow>, $crate::storage::StoreError> {
                sqlx::query_as(
                    "SELECT id, user_id, event, outcome, reason, ip_address, user_agent, created_at \
                     FROM audit_events WHERE user_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                )
                .bind(user_id)
                .bind(before.0)
                .bind(before.1)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn prune_audit(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
            }
        }

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
            async fn prune_revocations(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM revocations WHERE created_at < $1")
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
                    "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.last_active_at, s.ip_address, s.user_agent \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND u.disabled_at IS NULL",
                )
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }
        }

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
            }
        }

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
                    "SELECT ", $crate::storage::queries::user_columns!(), ", disabled_at FROM users \
                     WHERE (created_at > $1 OR (created_at = $1 AND id > $2)) AND email LIKE $3 \
                     ORDER BY created_at, id LIMIT $4"
                ))
                .bind(after.0)
                .bind(after.1)
                .bind(format!("%{}%", email_contains.replace('\\', "").replace('%', "").replace('_', "").to_lowercase()))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn admin_user(&self, user_id: uuid::Uuid) -> Result<Option<$crate::storage::AdminUserRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::user_columns!(), ", disabled_at FROM users WHERE id = $1"))
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
                let done = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
                    .bind(user_id)
                    .bind(disabled_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() > 0)
            }
        }

        /// Removes the user's provider links made before the owner proved the mailbox; returns
        /// their providers.
        async fn remove_unproven_links(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::queries::Backend>::Db>,
            user_id: uuid::Uuid,
        ) -> Result<Vec<String>, $crate::storage::StoreError> {
            let removed: Vec<(String,)> =
                sqlx::query_as("DELETE FROM accounts WHERE user_id = $1 AND NOT proven RETURNING provider")
                    .bind(user_id)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err($crate::storage::classify)?;
            Ok(removed.into_iter().map(|(p,)| p).collect())
        }

        /// Appends the ended sessions to the revocation feed, in the caller's transaction, and
        /// wakes the watchers of every replica when it commits.
        async fn record_revocations(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::queries::Backend>::Db>,
            ended: &[(uuid::Uuid, uuid::Uuid)],
            revoked: $crate::storage::Revoked,
        ) -> Result<(), $crate::storage::StoreError> {
            if ended.is_empty() {
                return Ok(());
            }
            for (session_id, user_id) in ended {
                sqlx::query("INSERT INTO revocations (session_id, user_id, reason, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(session_id)
                    .bind(user_id)
                    .bind(revoked.reason)
                    .bind(revoked.at)
                    .execute(&mut **tx)
                    .await
                    .map_err($crate::storage::classify)?;
            }
            <$store>::notify_revocations(tx).await
        }

        /// Writes the health probe's row: proof that the database takes writes, not only reads.
        async fn probe_write(
            pool: &sqlx::Pool<<$store as $crate::storage::queries::Backend>::Db>,
        ) -> Result<(), $crate::storage::StoreError> {
            sqlx::query(
                "INSERT INTO health_probe (id, checks) VALUES (1, 1) \
                 ON CONFLICT (id) DO UPDATE SET checks = health_probe.checks + 1",
            )
            .execute(pool)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }

        async fn insert_session<'e, E>(
            executor: E,
            s: &$crate::storage::NewSession,
        ) -> Result<$crate::storage::SessionRow, $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::queries::Backend>::Db>,
        {
            sqlx::query_as(concat!("INSERT INTO sessions (id, user_id, token_hash, created_at, updated_at, expires_at, \
                 last_active_at, ip_address, user_agent) VALUES ($1, $2, $3, $4, $4, $5, $4, $6, $7) \
                 RETURNING ", $crate::storage::queries::session_columns!()))
            .bind(s.id)
            .bind(s.user_id)
            .bind(&s.token_hash)
            .bind(s.now)
            .bind(s.expires_at)
            .bind(&s.ip_address)
            .bind(&s.user_agent)
            .fetch_one(executor)
            .await
            .map_err($crate::storage::classify)
        }

        async fn insert_token<'e, E>(
            executor: E,
            t: &$crate::storage::NewVerificationToken,
        ) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::queries::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO verification_tokens (id, user_id, purpose, token_hash, new_email, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(t.id)
            .bind(t.user_id)
            .bind(t.purpose)
            .bind(&t.token_hash)
            .bind(&t.new_email)
            .bind(t.now)
            .bind(t.expires_at)
            .execute(executor)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }

        async fn insert_profile<'e, E>(executor: E, p: &$crate::storage::ProfileRow) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::queries::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO profiles (user_id, programming_level, programming_languages, ai_knowledge_level, \
                 hardware_experience, learning_style, software_background, hardware_background, role, \
                 interests, onboarding_completed, consent_given, consent_updated_at, version, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, $14)",
            )
            .bind(p.user_id)
            .bind(&p.programming_level)
            .bind(&p.programming_languages)
            .bind(&p.ai_knowledge_level)
            .bind(&p.hardware_experience)
            .bind(&p.learning_style)
            .bind(&p.software_background)
            .bind(&p.hardware_background)
            .bind(&p.role)
            .bind(&p.interests)
            .bind(p.onboarding_completed)
            .bind(p.consent_given)
            .bind(p.consent_updated_at)
            .bind(p.created_at)
            .execute(executor)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::storage::AccountStore for $store {
            #[tracing::instrument(skip_all)]
            async fn find_account(
                &self,
                provider: &str,
                provider_account_id: &str,
            ) -> Result<Option<$crate::storage::AccountRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::account_columns!(),
                    " FROM accounts WHERE provider = $1 AND provider_account_id = $2"))
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
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::user_columns!(), " FROM users WHERE email = $1"))
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
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let user = &new.user;
                let row = sqlx::query_as::<_, $crate::storage::UserRow>(concat!("INSERT INTO users (id, email, name, image, email_verified, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ", $crate::storage::queries::user_columns!()))
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
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::account_columns!(),
                    " FROM accounts WHERE user_id = $1 ORDER BY created_at, id"))
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
                use $crate::storage::{classify, Unlinked};
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
                let (password_hash,): (Option<String>,) = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
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
                tx.commit().await.map_err(classify)?;
                Ok(Unlinked::Removed)
            }
        }

        async fn insert_account<'e, E>(
            executor: E,
            a: &$crate::storage::NewAccount,
        ) -> Result<$crate::storage::AccountRow, $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::queries::Backend>::Db>,
        {
            sqlx::query_as(concat!("INSERT INTO accounts (id, user_id, provider, provider_account_id, email, \
                 email_verified, access_token_enc, refresh_token_enc, id_token_enc, token_key_id, \
                 access_token_expires_at, scopes, created_at, updated_at, proven) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) RETURNING ",
                 $crate::storage::queries::account_columns!()))
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

pub(crate) use impl_queries;

/// Columns of `UserRow`.
macro_rules! user_columns {
    () => {
        "id, email, name, image, email_verified, created_at, updated_at"
    };
}
pub(crate) use user_columns;

/// Columns of `SessionRow`.
macro_rules! session_columns {
    () => {
        "id, user_id, created_at, expires_at, last_active_at, ip_address, user_agent"
    };
}
pub(crate) use session_columns;

/// Columns of `ProfileRow`.
macro_rules! profile_columns {
    () => {
        "user_id, programming_level, programming_languages, ai_knowledge_level, hardware_experience, \
         learning_style, software_background, hardware_background, role, interests, onboarding_completed, \
         consent_given, consent_updated_at, version, created_at, updated_at"
    };
}
pub(crate) use profile_columns;

/// Columns of `AccountRow`.
macro_rules! account_columns {
    () => {
        "id, user_id, provider, provider_account_id, email, email_verified, access_token_enc, \
         refresh_token_enc, id_token_enc, token_key_id, access_token_expires_at, scopes, created_at, \
         updated_at"
    };
}
pub(crate) use account_columns;

/// Names the sqlx database type of a store, for executor bounds inside the macro.
pub(crate) trait Backend {
    /// The sqlx database.
    type Db: sqlx::Database;
}
