-- Consent records, and the marks the personal-data retention leaves.

-- Every grant or withdrawal of consent, in order; never changed (the trigger below), erased
-- with the account.
CREATE TABLE consent_records (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             BLOB    NOT NULL,
    user_id        BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose        TEXT    NOT NULL,
    policy_version TEXT    NOT NULL,
    granted        INTEGER NOT NULL,
    ip_address     TEXT,
    user_agent     TEXT,
    created_at     TEXT    NOT NULL,
    -- Set once, when retention truncated or cleared ip_address and user_agent.
    client_redacted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX consent_records_id_key ON consent_records (id);
CREATE INDEX consent_records_user_idx ON consent_records (user_id, seq);
CREATE INDEX consent_records_created_at_idx ON consent_records (created_at);

ALTER TABLE sessions ADD COLUMN client_redacted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_events ADD COLUMN client_redacted INTEGER NOT NULL DEFAULT 0;
-- What retention has yet to redact, oldest first: the pruner's scan reads only these rows,
-- not every row it already redacted.
CREATE INDEX sessions_unredacted_idx ON sessions (created_at) WHERE NOT client_redacted;
CREATE INDEX audit_events_unredacted_idx ON audit_events (created_at) WHERE NOT client_redacted;
CREATE INDEX consent_records_unredacted_idx ON consent_records (created_at) WHERE NOT client_redacted;

-- Append-only, except for one change: retention redacting the client's address and agent.
-- Nothing else may change, and a redacted row cannot be changed again.
DROP TRIGGER audit_events_no_update;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id OR NEW.event IS NOT OLD.event
    OR NEW.outcome IS NOT OLD.outcome OR NEW.reason IS NOT OLD.reason
    OR NEW.created_at IS NOT OLD.created_at OR OLD.client_redacted OR NOT NEW.client_redacted
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
WHEN NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id
    OR NEW.purpose IS NOT OLD.purpose OR NEW.policy_version IS NOT OLD.policy_version
    OR NEW.granted IS NOT OLD.granted OR NEW.created_at IS NOT OLD.created_at
    OR OLD.client_redacted OR NOT NEW.client_redacted
BEGIN
    SELECT RAISE(ABORT, 'consent_records is append-only');
END;

-- The policy version the reader last consented to (for the learner background); consents given
-- before records existed were given under version 1, the first default.
ALTER TABLE profiles ADD COLUMN consent_policy_version text;
UPDATE profiles SET consent_policy_version = '1' WHERE consent_given;
INSERT INTO consent_records (id, user_id, purpose, policy_version, granted, created_at)
SELECT randomblob(16), user_id, 'learner_background', '1', 1, COALESCE(consent_updated_at, updated_at)
FROM profiles WHERE consent_given;
