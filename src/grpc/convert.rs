//! Conversions between proto messages and domain values.

use chrono::{DateTime, Utc};
use prost_types::{FieldMask, Timestamp};

use crate::{
    domain::{
        admin::AdminUser,
        audit::AuditEvent,
        auth::{SignedIn, SignedUp},
        consent::{ConsentRecord, ConsentState},
        error::Violations,
        factors::{self, Challenge, Entry, Factor},
        oauth::{Completed, LinkedAccount},
        privacy::PrivacyReport,
        profile::{AiKnowledgeLevel, HardwareExperience, LearningStyle, Profile, ProfileField, ProgrammingLevel},
        session::Session,
        user::User,
    },
    proto::v1 as pb,
};

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A protobuf timestamp as a time, or why it is not one.
pub fn from_timestamp(t: Timestamp) -> Result<DateTime<Utc>, String> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| "is not a valid timestamp".to_owned())
}

/// A count for a `uint32` field, capped rather than wrapped.
pub fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            id: u.id.to_string(),
            email: u.email,
            name: u.name,
            image: u.image,
            email_verified: u.email_verified,
            created_at: Some(timestamp(u.created_at)),
            updated_at: Some(timestamp(u.updated_at)),
        }
    }
}

impl From<Session> for pb::Session {
    fn from(s: Session) -> Self {
        pb::Session {
            id: s.id.to_string(),
            user_id: s.user_id.to_string(),
            created_at: Some(timestamp(s.created_at)),
            expires_at: Some(timestamp(s.expires_at)),
            last_active_at: Some(timestamp(s.last_active_at)),
            ip_address: s.ip_address.unwrap_or_default(),
            user_agent: s.user_agent.unwrap_or_default(),
            current: s.current,
            aal: u32::from(s.assurance.aal),
            amr: s.assurance.amr,
            auth_time: Some(timestamp(s.created_at)),
        }
    }
}

impl From<AdminUser> for pb::AdminUser {
    fn from(u: AdminUser) -> Self {
        pb::AdminUser { user: Some(u.user.into()), disabled_at: u.disabled_at.map(timestamp) }
    }
}

impl From<SignedUp> for pb::AuthResponse {
    fn from(s: SignedUp) -> Self {
        let (session, token) = s.session.unzip();
        pb::AuthResponse {
            user: Some(s.user.into()),
            session: session.map(Into::into),
            session_token: token.map(|t| t.into_string()).unwrap_or_default(),
            second_factor_required: None,
        }
    }
}

impl From<Challenge> for pb::SecondFactorRequired {
    fn from(c: Challenge) -> Self {
        pb::SecondFactorRequired {
            challenge_token: c.token.into_string(),
            methods: c.methods.into_iter().map(str::to_owned).collect(),
            expires_at: Some(timestamp(c.expires_at)),
            passkey_options_json: c.passkey_options.unwrap_or_default(),
        }
    }
}

impl From<factors::Completed> for pb::AuthResponse {
    fn from(c: factors::Completed) -> Self {
        pb::AuthResponse {
            user: Some(c.user.into()),
            session: Some(c.session.into()),
            session_token: c.token.into_string(),
            second_factor_required: None,
        }
    }
}

impl From<Factor> for pb::Factor {
    fn from(f: Factor) -> Self {
        pb::Factor {
            id: f.id.to_string(),
            kind: f.kind,
            name: f.name,
            created_at: Some(timestamp(f.created_at)),
            last_used_at: f.last_used_at.map(timestamp),
            backup_eligible: f.backup_eligible,
            backed_up: f.backed_up,
        }
    }
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        pb::AuditEvent {
            id: e.id.to_string(),
            event: e.event,
            outcome: e.outcome,
            ip_address: e.ip_address.unwrap_or_default(),
            user_agent: e.user_agent.unwrap_or_default(),
            created_at: Some(timestamp(e.created_at)),
        }
    }
}

impl From<SignedIn> for pb::AuthResponse {
    fn from(s: SignedIn) -> Self {
        // Until the second factor, the answer shows nothing of the account: a password alone
        // (perhaps a stolen one) learns only that a second factor is needed.
        match s.entry {
            Entry::Session(session, token) => pb::AuthResponse {
                user: Some(s.user.into()),
                session: Some(session.into()),
                session_token: token.into_string(),
                second_factor_required: None,
            },
            Entry::SecondFactor(challenge) => pb::AuthResponse {
                user: None,
                session: None,
                session_token: String::new(),
                second_factor_required: Some(challenge.into()),
            },
        }
    }
}

impl From<Completed> for pb::CompleteOAuthResponse {
    fn from(c: Completed) -> Self {
        // As for SignIn: nothing of the account before the second factor.
        let user = if c.challenge.is_some() { None } else { Some(c.user.into()) };
        pb::CompleteOAuthResponse {
            user,
            session: c.session.map(Into::into),
            session_token: c.token.map(|t| t.into_string()).unwrap_or_default(),
            is_new_user: c.is_new_user,
            second_factor_required: c.challenge.map(Into::into),
        }
    }
}

impl From<LinkedAccount> for pb::LinkedAccount {
    fn from(a: LinkedAccount) -> Self {
        pb::LinkedAccount {
            provider: a.provider,
            account_id: a.account_id,
            email: a.email.unwrap_or_default(),
            email_verified: a.email_verified,
            linked_at: Some(timestamp(a.linked_at)),
            scopes: a.scopes,
        }
    }
}

impl From<&Profile> for pb::Profile {
    fn from(p: &Profile) -> Self {
        use pb::{AiKnowledgeLevel as Ai, HardwareExperience as Hw, LearningStyle as Ls, ProgrammingLevel as Pl};
        let level = p.programming_level.map_or(Pl::Unspecified, |l| match l {
            ProgrammingLevel::Beginner => Pl::Beginner,
            ProgrammingLevel::Intermediate => Pl::Intermediate,
            ProgrammingLevel::Advanced => Pl::Advanced,
        });
        let ai = p.ai_knowledge_level.map_or(Ai::Unspecified, |l| match l {
            AiKnowledgeLevel::None => Ai::None,
            AiKnowledgeLevel::Basic => Ai::Basic,
            AiKnowledgeLevel::Intermediate => Ai::Intermediate,
            AiKnowledgeLevel::Advanced => Ai::Advanced,
        });
        let hw = p.hardware_experience.map_or(Hw::Unspecified, |l| match l {
            HardwareExperience::None => Hw::None,
            HardwareExperience::Basic => Hw::Basic,
            HardwareExperience::Robotics => Hw::Robotics,
            HardwareExperience::EmbeddedSystems => Hw::EmbeddedSystems,
        });
        let style = p.learning_style.map_or(Ls::Unspecified, |l| match l {
            LearningStyle::Theory => Ls::Theory,
            LearningStyle::CodeFirst => Ls::CodeFirst,
            LearningStyle::Visual => Ls::Visual,
            LearningStyle::Mixed => Ls::Mixed,
        });
        pb::Profile {
            programming_level: level.into(),
            programming_languages: p.programming_languages.clone(),
            ai_knowledge_level: ai.into(),
            hardware_experience: hw.into(),
            learning_style: style.into(),
            software_background: p.software_background.clone(),
            hardware_background: p.hardware_background.clone(),
            role: p.role.clone(),
            interests: p.interests.clone(),
            onboarding_completed: p.onboarding_completed,
            consent_given: p.consent_given,
            consent_updated_at: p.consent_updated_at.map(timestamp),
            updated_at: p.updated_at.map(timestamp),
            consent_policy_version: p.consent_policy_version.clone().unwrap_or_default(),
            consent_outdated: p.consent_outdated,
        }
    }
}

impl From<ConsentRecord> for pb::ConsentRecord {
    fn from(r: ConsentRecord) -> Self {
        Self {
            id: r.id.to_string(),
            purpose: r.purpose,
            policy_version: r.policy_version,
            granted: r.granted,
            created_at: Some(timestamp(r.created_at)),
            ip_address: r.ip_address.unwrap_or_default(),
            user_agent: r.user_agent.unwrap_or_default(),
        }
    }
}

impl From<ConsentState> for pb::ConsentState {
    fn from(s: ConsentState) -> Self {
        Self {
            purpose: s.purpose,
            granted: s.granted,
            policy_version: s.policy_version.unwrap_or_default(),
            outdated: s.outdated,
            updated_at: s.updated_at.map(timestamp),
        }
    }
}

/// A non-negative duration as a proto `Duration`.
fn duration(d: chrono::TimeDelta) -> prost_types::Duration {
    prost_types::Duration { seconds: d.num_seconds(), nanos: 0 }
}

impl From<PrivacyReport> for pb::PrivacyReport {
    fn from(r: PrivacyReport) -> Self {
        Self {
            policy_version: r.policy_version,
            users: r.users,
            purposes: r
                .purposes
                .into_iter()
                .map(|p| pb::PurposeConsent {
                    purpose: p.purpose,
                    current: p.current,
                    outdated: p.outdated,
                    none: p.none,
                })
                .collect(),
            since: Some(timestamp(r.since)),
            until: Some(timestamp(r.until)),
            self_exports: r.self_exports,
            admin_exports: r.admin_exports,
            deletions: r.deletions,
            retention: Some(pb::RetentionSettings {
                personal_data: Some(duration(r.retention.personal_data)),
                personal_data_mode: r.retention.redaction.as_str().to_owned(),
                audit_events: Some(duration(r.audit_retention)),
                feeds: Some(duration(r.feed_retention)),
            }),
        }
    }
}

/// Decodes a proto profile's values, recording unknown enum numbers under `prefix`.
/// Output-only fields are ignored.
pub fn profile_from_pb(p: pb::Profile, prefix: &str, v: &mut Violations) -> Profile {
    fn decode<P, D>(v: &mut Violations, field: String, raw: i32, map: impl Fn(P) -> Option<D>) -> Option<D>
    where
        P: TryFrom<i32>,
    {
        match P::try_from(raw) {
            Ok(value) => map(value),
            Err(_) => {
                v.add(field, format!("{raw} is not a known value"));
                None
            }
        }
    }
    use pb::{AiKnowledgeLevel as Ai, HardwareExperience as Hw, LearningStyle as Ls, ProgrammingLevel as Pl};
    let programming_level = decode(v, format!("{prefix}programming_level"), p.programming_level, |l: Pl| match l {
        Pl::Unspecified => None,
        Pl::Beginner => Some(ProgrammingLevel::Beginner),
        Pl::Intermediate => Some(ProgrammingLevel::Intermediate),
        Pl::Advanced => Some(ProgrammingLevel::Advanced),
    });
    let ai_knowledge_level = decode(v, format!("{prefix}ai_knowledge_level"), p.ai_knowledge_level, |l: Ai| match l {
        Ai::Unspecified => None,
        Ai::None => Some(AiKnowledgeLevel::None),
        Ai::Basic => Some(AiKnowledgeLevel::Basic),
        Ai::Intermediate => Some(AiKnowledgeLevel::Intermediate),
        Ai::Advanced => Some(AiKnowledgeLevel::Advanced),
    });
    let hardware_experience =
        decode(v, format!("{prefix}hardware_experience"), p.hardware_experience, |l: Hw| match l {
            Hw::Unspecified => None,
            Hw::None => Some(HardwareExperience::None),
            Hw::Basic => Some(HardwareExperience::Basic),
            Hw::Robotics => Some(HardwareExperience::Robotics),
            Hw::EmbeddedSystems => Some(HardwareExperience::EmbeddedSystems),
        });
    let learning_style = decode(v, format!("{prefix}learning_style"), p.learning_style, |l: Ls| match l {
        Ls::Unspecified => None,
        Ls::Theory => Some(LearningStyle::Theory),
        Ls::CodeFirst => Some(LearningStyle::CodeFirst),
        Ls::Visual => Some(LearningStyle::Visual),
        Ls::Mixed => Some(LearningStyle::Mixed),
    });
    Profile {
        programming_level,
        programming_languages: p.programming_languages,
        ai_knowledge_level,
        hardware_experience,
        learning_style,
        software_background: p.software_background,
        hardware_background: p.hardware_background,
        role: p.role,
        interests: p.interests,
        onboarding_completed: p.onboarding_completed,
        consent_given: p.consent_given,
        consent_updated_at: None,
        updated_at: None,
        consent_policy_version: None,
        consent_outdated: false,
    }
}

/// The fields an update names: the mask's paths, `*` for all, or without a mask every field
/// set in `values` (AIP-134).
pub fn update_fields(mask: Option<FieldMask>, values: &Profile, v: &mut Violations) -> Vec<ProfileField> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return values.set_fields();
    }
    if paths.iter().any(|p| p == "*") {
        if paths.len() > 1 {
            v.add("update_mask", "\"*\" cannot be combined with other paths");
        }
        return ProfileField::ALL.to_vec();
    }
    let mut fields = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let name = path.strip_prefix("profile.").unwrap_or(path);
        match ProfileField::parse(name) {
            Some(f) if !fields.contains(&f) => fields.push(f),
            Some(_) => {}
            None if ["consent_updated_at", "updated_at", "consent_policy_version", "consent_outdated"]
                .contains(&name) =>
            {
                v.add(format!("update_mask.paths[{i}]"), format!("{name} is output only"))
            }
            None => v.add(format!("update_mask.paths[{i}]"), format!("{path:?} is not a profile field")),
        }
    }
    fields
}
