// JSON shapes of Gatehouse's FastAPI router (clients/python/src/gatehouse/_models.py).
// Timestamps are ISO 8601 strings (or null when unset); enums are short lower-case strings.

export type ProgrammingLevel = "beginner" | "intermediate" | "advanced";
export type AiKnowledgeLevel = "none" | "basic" | "intermediate" | "advanced";
export type HardwareExperience = "none" | "basic" | "robotics" | "embedded_systems";
export type LearningStyle = "theory" | "code_first" | "visual" | "mixed";

/** The enum values the router accepts, for building `<select>`s. */
export const PROGRAMMING_LEVELS: readonly ProgrammingLevel[] = ["beginner", "intermediate", "advanced"];
export const AI_KNOWLEDGE_LEVELS: readonly AiKnowledgeLevel[] = ["none", "basic", "intermediate", "advanced"];
export const HARDWARE_EXPERIENCES: readonly HardwareExperience[] = [
  "none",
  "basic",
  "robotics",
  "embedded_systems",
];
export const LEARNING_STYLES: readonly LearningStyle[] = ["theory", "code_first", "visual", "mixed"];

/** `UserOut`. */
export interface User {
  id: string;
  email: string;
  name: string;
  image: string | null;
  email_verified: boolean;
  created_at: string | null;
  updated_at: string | null;
}

/** `SessionOut` (never the token). */
export interface Session {
  id: string;
  created_at: string | null;
  expires_at: string | null;
  last_active_at: string | null;
  ip_address: string;
  user_agent: string;
  current: boolean;
}

/** `SessionInfoOut`: `GET /auth/session`. */
export interface SessionInfo {
  user: User;
  session: Session;
}

/** `AuthOut`: sign-up and sign-in. `session` is null when Gatehouse signed nobody in (a
 * sign-up that must verify its address first); `session_token` only with `expose_token=True`. */
export interface AuthResult {
  user: User;
  session: Session | null;
  session_token?: string | null;
}

/**
 * `ProfileIn`: a merge patch. Only the fields present change; `null` (or an empty value)
 * clears one. The background fields need `consent_given: true`. Limits (checked by the
 * router, 422 otherwise): `programming_languages` and `interests` at most 20 entries of 1-50
 * and 1-100 characters, `role` at most 100, the backgrounds at most 2000.
 */
export interface ProfileInput {
  programming_level?: ProgrammingLevel | null;
  programming_languages?: string[] | null;
  ai_knowledge_level?: AiKnowledgeLevel | null;
  hardware_experience?: HardwareExperience | null;
  learning_style?: LearningStyle | null;
  software_background?: string | null;
  hardware_background?: string | null;
  role?: string | null;
  interests?: string[] | null;
  onboarding_completed?: boolean | null;
  consent_given?: boolean | null;
}

/** `ProfileOut`. */
export interface Profile {
  programming_level: ProgrammingLevel | null;
  programming_languages: string[];
  ai_knowledge_level: AiKnowledgeLevel | null;
  hardware_experience: HardwareExperience | null;
  learning_style: LearningStyle | null;
  software_background: string;
  hardware_background: string;
  role: string;
  interests: string[];
  onboarding_completed: boolean;
  consent_given: boolean;
  consent_updated_at: string | null;
  updated_at: string | null;
  /** The consent policy version the reader last consented to ("" without consent). */
  consent_policy_version: string;
  /** Consent was given for an earlier policy version: ask the reader again. */
  consent_outdated: boolean;
}

/** `SignUpIn`: email (at most 254 characters), password (8 to 128), name (1 to 200). */
export interface SignUpInput {
  email: string;
  password: string;
  name: string;
  profile?: ProfileInput;
}

/** `SignInIn`. */
export interface SignInInput {
  email: string;
  password: string;
}

/** `ChangePasswordIn`. */
export interface ChangePasswordInput {
  current_password: string;
  new_password: string;
  revoke_other_sessions?: boolean;
}

/** `ConsentRecordOut`. */
export interface ConsentRecord {
  id: string;
  purpose: string;
  policy_version: string;
  granted: boolean;
  created_at: string | null;
  ip_address: string;
  user_agent: string;
}

/** `ConsentStateOut`. */
export interface ConsentState {
  purpose: string;
  granted: boolean;
  policy_version: string;
  outdated: boolean;
  updated_at: string | null;
}

/** `ConsentRecordsOut`: `GET /auth/consents`. */
export interface ConsentRecords {
  records: ConsentRecord[];
  purposes: ConsentState[];
  policy_version: string;
  next_page_token: string | null;
}

/** `ConsentIn`: e.g. `{purpose: "learner_background", granted: false}`. */
export interface ConsentInput {
  purpose: string;
  granted: boolean;
}

/** `AuditEventOut`. */
export interface AuditEvent {
  id: string;
  event: string;
  outcome: string;
  ip_address: string;
  user_agent: string;
  created_at: string | null;
}

/** `AuditEventsOut`. */
export interface AuditEvents {
  events: AuditEvent[];
  next_page_token: string | null;
}

/** `AccessTokenOut`. */
export interface AccessToken {
  access_token: string;
  token_type: string;
  expires_at: string | null;
}

/** The data export (`GET /auth/export`). */
export interface DataExport {
  format: string;
  exported_at: string;
  user_id: string;
  tables: Record<string, unknown[]>;
  [key: string]: unknown;
}

/** A page request for the paged lists. */
export interface PageInput {
  pageSize?: number;
  pageToken?: string;
}
