//! The SQL, written once. Both dialects accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`, so one macro per concern implements that concern's store trait for each
//! backend's concrete pool type: native types and no generic-over-`Database` bounds, without
//! two copies of each query. `impl_queries!(Store)` implements all of them, and the helpers
//! they share, for a struct with a `pool` field.

mod accounts;
mod admin;
mod audit;
pub(crate) mod factors;
mod keys;
mod oauth_states;
mod privacy;
mod profiles;
mod revocations;
mod sessions;
mod tokens;
mod users;

pub(crate) use accounts::accounts;
pub(crate) use admin::admin;
pub(crate) use audit::audit;
pub(crate) use factors::factors;
pub(crate) use keys::keys;
pub(crate) use oauth_states::oauth_states;
pub(crate) use privacy::privacy;
pub(crate) use profiles::profiles;
pub(crate) use revocations::revocations;
pub(crate) use sessions::sessions;
pub(crate) use tokens::tokens;
pub(crate) use users::users;

/// Implements every store trait, and the helpers the statements share, for `$store`.
macro_rules! impl_queries {
    ($store:ty) => {
        $crate::storage::sql::shared!($store);
        $crate::storage::sql::users!($store);
        $crate::storage::sql::sessions!($store);
        $crate::storage::sql::profiles!($store);
        $crate::storage::sql::tokens!($store);
        $crate::storage::sql::audit!($store);
        $crate::storage::sql::revocations!($store);
        $crate::storage::sql::keys!($store);
        $crate::storage::sql::admin!($store);
        $crate::storage::sql::accounts!($store);
        $crate::storage::sql::oauth_states!($store);
        $crate::storage::sql::privacy!($store);
        $crate::storage::sql::factors!($store);
    };
}
pub(crate) use impl_queries;

/// Statements more than one concern runs inside its own transaction.
macro_rules! shared {
    ($store:ty) => {
        /// Which sessions [`end_sessions`] deletes.
        enum Sessions {
            /// One session of the user.
            One(uuid::Uuid),
            /// Every session of the user but this one.
            AllBut(uuid::Uuid),
            /// Every session of the user.
            All,
        }

        /// Deletes sessions of `user_id` and records each in the revocation feed, in the
        /// caller's transaction: the one place a session row is removed on purpose. Returns
        /// how many went.
        async fn end_sessions(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
            user_id: uuid::Uuid,
            which: Sessions,
            revoked: $crate::storage::Revoked,
        ) -> Result<u64, $crate::storage::StoreError> {
            let ended: Vec<(uuid::Uuid, uuid::Uuid)> = match which {
                Sessions::One(id) => {
                    sqlx::query_as("DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id, user_id")
                        .bind(id)
                        .bind(user_id)
                }
                Sessions::AllBut(keep) => {
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id, user_id")
                        .bind(user_id)
                        .bind(keep)
                }
                Sessions::All => {
                    sqlx::query_as("DELETE FROM sessions WHERE user_id = $1 RETURNING id, user_id").bind(user_id)
                }
            }
            .fetch_all(&mut **tx)
            .await
            .map_err($crate::storage::classify)?;
            record_revocations(tx, &ended, revoked).await?;
            Ok(ended.len() as u64)
        }

        /// Removes the user's provider links made before the owner proved the mailbox; returns
        /// their providers.
        async fn remove_unproven_links(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
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
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
            ended: &[(uuid::Uuid, uuid::Uuid)],
            revoked: $crate::storage::Revoked,
        ) -> Result<(), $crate::storage::StoreError> {
            if ended.is_empty() {
                return Ok(());
            }
            for (session_id, user_id) in ended {
                sqlx::query(
                    "INSERT INTO revocations (session_id, user_id, reason, created_at) VALUES ($1, $2, $3, $4)",
                )
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

        /// Appends a consent record, in the caller's transaction or on the pool.
        async fn insert_consent<'e, E>(
            executor: E,
            c: &$crate::storage::ConsentRow,
        ) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO consent_records (id, user_id, purpose, policy_version, granted, ip_address, \
                 user_agent, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(c.id)
            .bind(c.user_id)
            .bind(&c.purpose)
            .bind(&c.policy_version)
            .bind(c.granted)
            .bind(&c.ip_address)
            .bind(&c.user_agent)
            .bind(c.created_at)
            .execute(executor)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }

        /// Appends a user to the user-change feed, in the caller's transaction, and wakes
        /// every replica's follower when it commits: what `GetSession` returns for them changed.
        async fn record_user_change(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::storage::sql::Backend>::Db>,
            user_id: uuid::Uuid,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::storage::StoreError> {
            sqlx::query("INSERT INTO user_changes (user_id, created_at) VALUES ($1, $2)")
                .bind(user_id)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err($crate::storage::classify)?;
            <$store>::notify_revocations(tx).await
        }

        /// Writes the health probe's row: proof that the database takes writes, not only reads.
        async fn probe_write<'e, E>(executor: E) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO health_probe (id, checks) VALUES (1, 1) \
                 ON CONFLICT (id) DO UPDATE SET checks = health_probe.checks + 1",
            )
            .execute(executor)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }

        async fn insert_session<'e, E>(
            executor: E,
            s: &$crate::storage::NewSession,
        ) -> Result<$crate::storage::SessionRow, $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
        {
            sqlx::query_as(concat!(
                "INSERT INTO sessions (id, user_id, token_hash, created_at, updated_at, expires_at, \
                 last_active_at, ip_address, user_agent, aal, amr) \
                 VALUES ($1, $2, $3, $4, $4, $5, $4, $6, $7, $8, $9) \
                 RETURNING ",
                $crate::storage::sql::session_columns!()
            ))
            .bind(s.id)
            .bind(s.user_id)
            .bind(&s.token_hash)
            .bind(s.now)
            .bind(s.expires_at)
            .bind(&s.ip_address)
            .bind(&s.user_agent)
            .bind(s.aal)
            .bind(&s.amr)
            .fetch_one(executor)
            .await
            .map_err($crate::storage::classify)
        }

        async fn insert_token<'e, E>(
            executor: E,
            t: &$crate::storage::NewVerificationToken,
        ) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
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

        async fn insert_profile<'e, E>(
            executor: E,
            p: &$crate::storage::ProfileRow,
        ) -> Result<(), $crate::storage::StoreError>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::storage::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO profiles (user_id, programming_level, programming_languages, ai_knowledge_level, \
                 hardware_experience, learning_style, software_background, hardware_background, role, \
                 interests, onboarding_completed, consent_given, consent_updated_at, consent_policy_version, \
                 version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, 1, $14, $14)",
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
            .bind(&p.consent_policy_version)
            .execute(executor)
            .await
            .map_err($crate::storage::classify)?;
            Ok(())
        }
    };
}
pub(crate) use shared;

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
        "id, user_id, created_at, expires_at, last_active_at, ip_address, user_agent, aal, amr"
    };
}
pub(crate) use session_columns;

/// Columns of `ProfileRow`.
macro_rules! profile_columns {
    () => {
        "user_id, programming_level, programming_languages, ai_knowledge_level, hardware_experience, \
         learning_style, software_background, hardware_background, role, interests, onboarding_completed, \
         consent_given, consent_updated_at, consent_policy_version, version, created_at, updated_at"
    };
}
pub(crate) use profile_columns;

/// Columns of `ConsentRow`.
macro_rules! consent_columns {
    () => {
        "seq, id, user_id, purpose, policy_version, granted, ip_address, user_agent, created_at"
    };
}
pub(crate) use consent_columns;

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
