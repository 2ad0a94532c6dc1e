//! Learner profiles: `ProfileStore`.

/// Implements `ProfileStore` for a store with a `pool` field.
macro_rules! profiles {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::ProfileStore for $store {
            #[tracing::instrument(skip_all)]
            async fn get_profile(
                &self,
                user_id: uuid::Uuid,
            ) -> Result<Option<$crate::storage::ProfileRow>, $crate::storage::StoreError> {
                sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::sql::profile_columns!(),
                    " FROM profiles WHERE user_id = $1"
                ))
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::storage::classify)
            }

            #[tracing::instrument(skip_all)]
            async fn insert_profile(
                &self,
                p: &$crate::storage::ProfileRow,
                consent: Option<&$crate::storage::ConsentRow>,
            ) -> Result<(), $crate::storage::StoreError> {
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err($crate::storage::classify)?;
                        insert_profile(&mut *tx, p).await?;
                        if let Some(c) = consent {
                            insert_consent(&mut *tx, c).await?;
                        }
                        tx.commit().await.map_err($crate::storage::classify)
                    })
                })
                .await
            }

            #[tracing::instrument(skip_all)]
            async fn update_profile(
                &self,
                p: &$crate::storage::ProfileRow,
                expected_version: i64,
                consent: Option<&$crate::storage::ConsentRow>,
            ) -> Result<bool, $crate::storage::StoreError> {
                $crate::storage::retry_aborted(|| {
                    Box::pin(async move {
                        let mut tx = self.pool.begin().await.map_err($crate::storage::classify)?;
                        let done = sqlx::query(
                            "UPDATE profiles SET programming_level = $2, programming_languages = $3, \
                         ai_knowledge_level = $4, hardware_experience = $5, learning_style = $6, \
                         software_background = $7, hardware_background = $8, role = $9, interests = $10, \
                         onboarding_completed = $11, consent_given = $12, consent_updated_at = $13, \
                         updated_at = $14, consent_policy_version = $16, version = version + 1 \
                         WHERE user_id = $1 AND version = $15",
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
                        .bind(&p.consent_policy_version)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::storage::classify)?;
                        if done.rows_affected() != 1 {
                            return Ok(false);
                        }
                        // In the profile's transaction: a consent change is never stored unrecorded.
                        if let Some(c) = consent {
                            insert_consent(&mut *tx, c).await?;
                        }
                        tx.commit().await.map_err($crate::storage::classify)?;
                        Ok(true)
                    })
                })
                .await
            }
        }
    };
}
pub(crate) use profiles;
