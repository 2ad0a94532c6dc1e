//! The SQL, written once. Both dialects accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`, so one macro implements the store traits for each backend's concrete pool
//! type: native types and no generic-over-`Database` bounds, without two copies of each query.

/// Implements `UserStore`, `SessionStore` and `ProfileStore` for a struct with a `pool` field.
macro_rules! impl_queries {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::UserStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_user(
                &self,
                user: &$crate::storage::NewUser,
                profile: Option<&$crate::storage::ProfileRow>,
            ) -> Result<$crate::storage::UserRow, $crate::storage::StoreError> {
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
                if let Some(profile) = profile {
                    insert_profile(&mut *tx, profile).await?;
                }
                tx.commit().await.map_err(classify)?;
                Ok(row)
            }

            #[tracing::instrument(skip_all)]
            async fn find_credentials_by_email(
                &self,
                email: &str,
            ) -> Result<Option<$crate::storage::CredentialRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!("SELECT ", $crate::storage::queries::user_columns!(), ", password_hash FROM users WHERE email = $1"))
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
            async fn set_password_hash(
                &self,
                user_id: uuid::Uuid,
                hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::storage::StoreError> {
                let done = sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                if done.rows_affected() == 0 { Err($crate::storage::StoreError::NotFound) } else { Ok(()) }
            }

            #[tracing::instrument(skip_all)]
            async fn delete_user(&self, user_id: uuid::Uuid) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::SessionStore for $store {
            #[tracing::instrument(skip_all)]
            async fn create_session(
                &self,
                s: &$crate::storage::NewSession,
            ) -> Result<$crate::storage::SessionRow, $crate::storage::StoreError> {
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
                .fetch_one(&self.pool)
                .await
                .map_err($crate::storage::classify)
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
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
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
            ) -> Result<bool, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
                    .bind(session_id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected() > 0)
            }

            #[tracing::instrument(skip_all)]
            async fn delete_other_sessions(
                &self,
                user_id: uuid::Uuid,
                keep: uuid::Uuid,
            ) -> Result<u64, $crate::storage::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
                    .bind(user_id)
                    .bind(keep)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::storage::classify)?;
                Ok(done.rows_affected())
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

/// Names the sqlx database type of a store, for executor bounds inside the macro.
pub(crate) trait Backend {
    /// The sqlx database.
    type Db: sqlx::Database;
}
