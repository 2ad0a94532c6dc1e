//! Learner profiles: field rules, partial updates and the consent rule.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    client::ClientInfo,
    clock::Clock,
    consent::{BACKGROUND_PURPOSE, ConsentPolicy, ConsentRecord, ConsentState},
    error::{Error, Violations},
};
use crate::storage::{ConsentRow, ProfileRow, Store, StoreError};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// How much programming the reader has done.
    ProgrammingLevel { /** New. */ Beginner = "beginner", /** Regular. */ Intermediate = "intermediate", /** Experienced. */ Advanced = "advanced" }
);
text_enum!(
    /// What the reader knows of AI.
    AiKnowledgeLevel { /** None. */ None = "none", /** Basics. */ Basic = "basic", /** Some. */ Intermediate = "intermediate", /** Expert. */ Advanced = "advanced" }
);
text_enum!(
    /// Hardware experience.
    HardwareExperience { /** None. */ None = "none", /** Basics. */ Basic = "basic", /** Robotics. */ Robotics = "robotics", /** Embedded. */ EmbeddedSystems = "embedded_systems" }
);
text_enum!(
    /// Preferred way of learning.
    LearningStyle { /** Theory. */ Theory = "theory", /** Code. */ CodeFirst = "code_first", /** Visual. */ Visual = "visual", /** Mixed. */ Mixed = "mixed" }
);

/// Longest free-text background.
pub const MAX_BACKGROUND_CHARS: usize = 2000;
/// Longest role.
pub const MAX_ROLE_CHARS: usize = 100;
/// Most list entries.
pub const MAX_LIST_ITEMS: usize = 20;
/// Longest programming language name.
pub const MAX_LANGUAGE_CHARS: usize = 50;
/// Longest interest.
pub const MAX_INTEREST_CHARS: usize = 100;

/// A learner profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Background.
    pub programming_level: Option<ProgrammingLevel>,
    /// Background.
    pub programming_languages: Vec<String>,
    /// Background.
    pub ai_knowledge_level: Option<AiKnowledgeLevel>,
    /// Background.
    pub hardware_experience: Option<HardwareExperience>,
    /// Preference.
    pub learning_style: Option<LearningStyle>,
    /// Background.
    pub software_background: String,
    /// Background.
    pub hardware_background: String,
    /// Preference.
    pub role: String,
    /// Preference.
    pub interests: Vec<String>,
    /// Preference.
    pub onboarding_completed: bool,
    /// Consent to store the background fields.
    pub consent_given: bool,
    /// Output only.
    pub consent_updated_at: Option<DateTime<Utc>>,
    /// Output only: the policy version of the latest grant.
    pub consent_policy_version: Option<String>,
    /// Output only: consent was given for an earlier policy version than the one in force.
    pub consent_outdated: bool,
    /// Output only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A profile field that an update can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    /// `programming_level`
    ProgrammingLevel,
    /// `programming_languages`
    ProgrammingLanguages,
    /// `ai_knowledge_level`
    AiKnowledgeLevel,
    /// `hardware_experience`
    HardwareExperience,
    /// `learning_style`
    LearningStyle,
    /// `software_background`
    SoftwareBackground,
    /// `hardware_background`
    HardwareBackground,
    /// `role`
    Role,
    /// `interests`
    Interests,
    /// `onboarding_completed`
    OnboardingCompleted,
    /// `consent_given`
    ConsentGiven,
}

impl ProfileField {
    /// Every updatable field.
    pub const ALL: [ProfileField; 11] = [
        Self::ProgrammingLevel,
        Self::ProgrammingLanguages,
        Self::AiKnowledgeLevel,
        Self::HardwareExperience,
        Self::LearningStyle,
        Self::SoftwareBackground,
        Self::HardwareBackground,
        Self::Role,
        Self::Interests,
        Self::OnboardingCompleted,
        Self::ConsentGiven,
    ];

    /// The proto field name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ProgrammingLevel => "programming_level",
            Self::ProgrammingLanguages => "programming_languages",
            Self::AiKnowledgeLevel => "ai_knowledge_level",
            Self::HardwareExperience => "hardware_experience",
            Self::LearningStyle => "learning_style",
            Self::SoftwareBackground => "software_background",
            Self::HardwareBackground => "hardware_background",
            Self::Role => "role",
            Self::Interests => "interests",
            Self::OnboardingCompleted => "onboarding_completed",
            Self::ConsentGiven => "consent_given",
        }
    }

    /// Parses a field-mask path.
    pub fn parse(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == path)
    }

    /// Whether the field describes the person and so needs consent.
    pub fn is_background(self) -> bool {
        matches!(
            self,
            Self::ProgrammingLevel
                | Self::ProgrammingLanguages
                | Self::AiKnowledgeLevel
                | Self::HardwareExperience
                | Self::SoftwareBackground
                | Self::HardwareBackground
        )
    }
}

impl Profile {
    /// Checks lengths and list sizes, recording violations under `prefix`.
    pub fn validate(&self, prefix: &str, v: &mut Violations) {
        let text = |v: &mut Violations, name: &str, value: &str, max: usize| {
            if value.chars().count() > max {
                v.add(format!("{prefix}{name}"), format!("must be at most {max} characters"));
            } else if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                v.add(format!("{prefix}{name}"), "must not contain control characters");
            }
        };
        text(v, "software_background", &self.software_background, MAX_BACKGROUND_CHARS);
        text(v, "hardware_background", &self.hardware_background, MAX_BACKGROUND_CHARS);
        text(v, "role", &self.role, MAX_ROLE_CHARS);
        let list = |v: &mut Violations, name: &str, items: &[String], max: usize| {
            if items.len() > MAX_LIST_ITEMS {
                v.add(format!("{prefix}{name}"), format!("must have at most {MAX_LIST_ITEMS} entries"));
            }
            for (i, item) in items.iter().enumerate() {
                let trimmed = item.trim();
                if trimmed.is_empty() || trimmed.chars().count() > max || trimmed.chars().any(char::is_control) {
                    v.add(format!("{prefix}{name}[{i}]"), format!("must be 1 to {max} characters of text"));
                }
            }
        };
        list(v, "programming_languages", &self.programming_languages, MAX_LANGUAGE_CHARS);
        list(v, "interests", &self.interests, MAX_INTEREST_CHARS);
    }

    /// The fields that hold a non-empty value (the implied mask of an update without one).
    pub fn set_fields(&self) -> Vec<ProfileField> {
        ProfileField::ALL.into_iter().filter(|f| !self.is_empty(*f)).collect()
    }

    fn is_empty(&self, field: ProfileField) -> bool {
        use ProfileField as F;
        match field {
            F::ProgrammingLevel => self.programming_level.is_none(),
            F::ProgrammingLanguages => self.programming_languages.is_empty(),
            F::AiKnowledgeLevel => self.ai_knowledge_level.is_none(),
            F::HardwareExperience => self.hardware_experience.is_none(),
            F::LearningStyle => self.learning_style.is_none(),
            F::SoftwareBackground => self.software_background.is_empty(),
            F::HardwareBackground => self.hardware_background.is_empty(),
            F::Role => self.role.is_empty(),
            F::Interests => self.interests.is_empty(),
            F::OnboardingCompleted => !self.onboarding_completed,
            F::ConsentGiven => !self.consent_given,
        }
    }

    fn copy_field(&mut self, from: &Profile, field: ProfileField) {
        use ProfileField as F;
        match field {
            F::ProgrammingLevel => self.programming_level = from.programming_level,
            F::ProgrammingLanguages => self.programming_languages = clean_list(&from.programming_languages),
            F::AiKnowledgeLevel => self.ai_knowledge_level = from.ai_knowledge_level,
            F::HardwareExperience => self.hardware_experience = from.hardware_experience,
            F::LearningStyle => self.learning_style = from.learning_style,
            F::SoftwareBackground => self.software_background = from.software_background.trim().to_owned(),
            F::HardwareBackground => self.hardware_background = from.hardware_background.trim().to_owned(),
            F::Role => self.role = from.role.trim().to_owned(),
            F::Interests => self.interests = clean_list(&from.interests),
            F::OnboardingCompleted => self.onboarding_completed = from.onboarding_completed,
            F::ConsentGiven => self.consent_given = from.consent_given,
        }
    }

    fn clear_background(&mut self) {
        self.programming_level = None;
        self.programming_languages.clear();
        self.ai_knowledge_level = None;
        self.hardware_experience = None;
        self.software_background.clear();
        self.hardware_background.clear();
    }

    /// Applies `fields` of `values` to this profile under the consent rule: setting a background
    /// field without consent fails; withdrawing consent erases the background. Also returns the
    /// consent change to record: a grant (also of a consent given for an earlier version than
    /// `policy_version`, which this renews) or a withdrawal.
    pub fn apply(
        &self,
        values: &Profile,
        fields: &[ProfileField],
        now: DateTime<Utc>,
        policy_version: &str,
    ) -> Result<(Profile, Option<bool>), Error> {
        let mut next = self.clone();
        for field in fields {
            next.copy_field(values, *field);
        }
        if !next.consent_given {
            let offending: Vec<&str> =
                fields.iter().filter(|f| f.is_background() && !values.is_empty(**f)).map(|f| f.name()).collect();
            if !offending.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "consent_given must be true to store background fields ({})",
                    offending.join(", ")
                )));
            }
            next.clear_background();
        }
        let renews = next.consent_given
            && fields.contains(&ProfileField::ConsentGiven)
            && self.consent_policy_version.as_deref() != Some(policy_version);
        let change = (next.consent_given != self.consent_given || renews).then_some(next.consent_given);
        if change.is_some() {
            next.consent_updated_at = Some(now);
            next.consent_policy_version = next.consent_given.then(|| policy_version.to_owned());
        }
        next.updated_at = Some(now);
        Ok((next.flagged(policy_version), change))
    }

    /// Sets `consent_outdated` against the policy version in force.
    pub fn flagged(mut self, policy_version: &str) -> Self {
        self.consent_outdated = self.consent_given && self.consent_policy_version.as_deref() != Some(policy_version);
        self
    }

    /// The row that stores this profile for `user_id`.
    pub fn to_row(&self, user_id: Uuid, version: i64, created_at: DateTime<Utc>) -> ProfileRow {
        let json = |items: &[String]| serde_json::to_string(items).unwrap_or_else(|_| "[]".into());
        ProfileRow {
            user_id,
            programming_level: self.programming_level.map(|e| e.as_str().to_owned()),
            programming_languages: json(&self.programming_languages),
            ai_knowledge_level: self.ai_knowledge_level.map(|e| e.as_str().to_owned()),
            hardware_experience: self.hardware_experience.map(|e| e.as_str().to_owned()),
            learning_style: self.learning_style.map(|e| e.as_str().to_owned()),
            software_background: self.software_background.clone(),
            hardware_background: self.hardware_background.clone(),
            role: self.role.clone(),
            interests: json(&self.interests),
            onboarding_completed: self.onboarding_completed,
            consent_given: self.consent_given,
            consent_updated_at: self.consent_updated_at,
            consent_policy_version: self.consent_policy_version.clone(),
            version,
            created_at,
            updated_at: self.updated_at.unwrap_or(created_at),
        }
    }

    /// The profile a row stores.
    pub fn from_row(row: &ProfileRow) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Internal(anyhow::anyhow!("stored profile has an invalid {what}"));
        let json = |text: &str, what: &str| serde_json::from_str::<Vec<String>>(text).map_err(|_| corrupt(what));
        fn enumerated<T>(text: &Option<String>, parse: fn(&str) -> Option<T>, what: &str) -> Result<Option<T>, Error> {
            match text {
                None => Ok(None),
                Some(t) => parse(t)
                    .map(Some)
                    .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored profile has an invalid {what}"))),
            }
        }
        Ok(Self {
            programming_level: enumerated(&row.programming_level, ProgrammingLevel::parse, "programming_level")?,
            programming_languages: json(&row.programming_languages, "programming_languages")?,
            ai_knowledge_level: enumerated(&row.ai_knowledge_level, AiKnowledgeLevel::parse, "ai_knowledge_level")?,
            hardware_experience: enumerated(
                &row.hardware_experience,
                HardwareExperience::parse,
                "hardware_experience",
            )?,
            learning_style: enumerated(&row.learning_style, LearningStyle::parse, "learning_style")?,
            software_background: row.software_background.clone(),
            hardware_background: row.hardware_background.clone(),
            role: row.role.clone(),
            interests: json(&row.interests, "interests")?,
            onboarding_completed: row.onboarding_completed,
            consent_given: row.consent_given,
            consent_updated_at: row.consent_updated_at,
            consent_policy_version: row.consent_policy_version.clone(),
            consent_outdated: false,
            updated_at: Some(row.updated_at),
        })
    }
}

fn clean_list(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let item = item.trim().to_owned();
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Profile and consent operations for signed-in users.
pub struct Profiles {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: ConsentPolicy,
}

/// Optimistic-concurrency attempts before giving up on a contended profile. With the backoff
/// below a loser keeps trying for up to about two seconds, so that dozens of concurrent updates
/// of one profile all apply (60 at once: every one, on both backends; `tests/api/profile.rs`).
const UPDATE_ATTEMPTS: u32 = 16;
/// The first retry waits up to this long; each further one up to twice as long, to the cap.
const RETRY_BASE: Duration = Duration::from_millis(4);
/// The longest wait between two attempts.
const RETRY_CAP: Duration = Duration::from_millis(250);

/// A random wait in `[0, min(cap, base * 2^attempt))` ("full jitter"): contenders that lost
/// the same race spread out instead of colliding again in step.
fn retry_delay(attempt: u32) -> Duration {
    let ceiling = RETRY_BASE.saturating_mul(1u32 << attempt.min(16)).min(RETRY_CAP);
    let unit = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    ceiling.mul_f64(unit)
}

impl Profiles {
    /// Profile operations over `store`, under the consent `policy`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: ConsentPolicy) -> Self {
        Self { store, clock, policy }
    }

    /// The consent policy in force.
    pub fn policy(&self) -> &ConsentPolicy {
        &self.policy
    }

    /// The user's profile; empty if never set.
    #[tracing::instrument(skip_all)]
    pub async fn get(&self, user_id: Uuid) -> Result<Profile, Error> {
        match self.store.get_profile(user_id).await? {
            Some(row) => Ok(Profile::from_row(&row)?.flagged(&self.policy.version)),
            None => Ok(Profile::default()),
        }
    }

    /// The consent record a profile change makes, if it changes consent.
    fn consent_record(&self, user_id: Uuid, change: Option<bool>, client: &ClientInfo) -> Option<ConsentRow> {
        change.map(|granted| self.policy.record(user_id, BACKGROUND_PURPOSE, granted, client, self.clock.now()))
    }

    /// Applies a partial update; concurrent updates of other fields are never lost. A consent
    /// change is recorded in the same transaction.
    #[tracing::instrument(skip_all)]
    pub async fn update(
        &self,
        user_id: Uuid,
        values: &Profile,
        fields: &[ProfileField],
        client: &ClientInfo,
    ) -> Result<Profile, Error> {
        let version = self.policy.version.as_str();
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(retry_delay(attempt - 1)).await;
            }
            let now = self.clock.now();
            match self.store.get_profile(user_id).await? {
                Some(row) => {
                    let (next, change) = Profile::from_row(&row)?.apply(values, fields, now, version)?;
                    let consent = self.consent_record(user_id, change, client);
                    if self
                        .store
                        .update_profile(
                            &next.to_row(user_id, row.version, row.created_at),
                            row.version,
                            consent.as_ref(),
                        )
                        .await?
                    {
                        return Ok(next);
                    }
                }
                None => {
                    let (next, change) = Profile::default().apply(values, fields, now, version)?;
                    let consent = self.consent_record(user_id, change, client);
                    match self.store.insert_profile(&next.to_row(user_id, 1, now), consent.as_ref()).await {
                        Ok(()) => return Ok(next),
                        // Another request created it first: go round again and update it.
                        Err(StoreError::Conflict(c)) if c.contains("pkey") || c == "unknown" => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        // Lost every race: the store is fine, the caller may retry.
        Err(Error::Aborted("the profile kept changing concurrently; retry the update"))
    }

    /// One page of the user's consent records, newest first, the next page's token, and where
    /// the user stands for every purpose.
    #[tracing::instrument(skip_all)]
    pub async fn consents(
        &self,
        user_id: Uuid,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ConsentRecord>, String, Vec<ConsentState>), Error> {
        let size = match page_size {
            0 => 50,
            n if n <= 100 => n,
            _ => return Err(Error::invalid("page_size", "must be at most 100")),
        };
        let before = if page_token.is_empty() {
            i64::MAX
        } else {
            page_token
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::invalid("page_token", "is not a token from a previous page"))?
        };
        let mut rows = self.store.list_consent_records(user_id, before, i64::from(size) + 1).await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| r.seq.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let states = self.policy.states(&self.store.latest_consents(user_id).await?);
        Ok((rows.into_iter().map(Into::into).collect(), next, states))
    }

    /// Grants or withdraws consent for a configured purpose and returns the state after. The
    /// background purpose goes through the profile (withdrawing erases the fields); another
    /// purpose is recorded only when it changes (or renews an outdated grant).
    #[tracing::instrument(skip_all)]
    pub async fn set_consent(
        &self,
        user_id: Uuid,
        purpose: &str,
        granted: bool,
        client: &ClientInfo,
    ) -> Result<ConsentState, Error> {
        self.policy.check(purpose)?;
        if purpose == BACKGROUND_PURPOSE {
            let values = Profile { consent_given: granted, ..Default::default() };
            self.update(user_id, &values, &[ProfileField::ConsentGiven], client).await?;
        } else {
            let latest = self.store.latest_consents(user_id).await?;
            let state = self.policy.states(&latest).into_iter().find(|s| s.purpose == purpose).unwrap_or_default();
            if state.granted != granted || state.outdated {
                let record = self.policy.record(user_id, purpose, granted, client, self.clock.now());
                self.store.append_consent(&record).await?;
            }
        }
        let latest = self.store.latest_consents(user_id).await?;
        Ok(self.policy.states(&latest).into_iter().find(|s| s.purpose == purpose).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_needs_consent_and_withdrawal_erases() {
        let now = Utc::now();
        let values = Profile { programming_level: Some(ProgrammingLevel::Advanced), ..Default::default() };
        let err = Profile::default().apply(&values, &[ProfileField::ProgrammingLevel], now, "1");
        assert!(matches!(err, Err(Error::FailedPrecondition(m)) if m.contains("programming_level")));

        let consented = Profile { consent_given: true, ..values.clone() };
        let (stored, change) = Profile::default()
            .apply(&consented, &[ProfileField::ConsentGiven, ProfileField::ProgrammingLevel], now, "1")
            .unwrap();
        assert_eq!(change, Some(true));
        assert_eq!(stored.programming_level, Some(ProgrammingLevel::Advanced));
        assert_eq!(stored.consent_updated_at, Some(now));
        assert_eq!(stored.consent_policy_version.as_deref(), Some("1"));

        // Another field changes nothing about consent; under a new version it is outdated.
        let (same, change) = stored.apply(&Profile::default(), &[ProfileField::Role], now, "1").unwrap();
        assert_eq!((change, same.consent_outdated), (None, false));
        assert!(stored.clone().flagged("2").consent_outdated);
        // Consenting again under the new version renews it.
        let (renewed, change) = stored.apply(&consented, &[ProfileField::ConsentGiven], now, "2").unwrap();
        assert_eq!((change, renewed.consent_outdated), (Some(true), false));
        assert_eq!(renewed.consent_policy_version.as_deref(), Some("2"));

        let (withdrawn, change) = stored.apply(&Profile::default(), &[ProfileField::ConsentGiven], now, "1").unwrap();
        assert_eq!(change, Some(false));
        assert_eq!(withdrawn.programming_level, None);
        assert_eq!(withdrawn.consent_policy_version, None);
        assert!(!withdrawn.consent_given);
    }

    #[test]
    fn retry_delays_grow_to_the_cap() {
        for attempt in 0..20 {
            let ceiling = RETRY_BASE.saturating_mul(1 << attempt.min(16)).min(RETRY_CAP);
            assert!(retry_delay(attempt) <= ceiling);
        }
        assert!(retry_delay(0) <= Duration::from_millis(4));
    }

    #[test]
    fn row_round_trip() {
        let p = Profile {
            programming_languages: vec!["rust".into(), "python".into()],
            learning_style: Some(LearningStyle::CodeFirst),
            consent_given: true,
            consent_policy_version: Some("1".into()),
            updated_at: Some(Utc::now()),
            ..Default::default()
        };
        let row = p.to_row(Uuid::nil(), 1, Utc::now());
        assert_eq!(Profile::from_row(&row).unwrap(), p);
    }
}
