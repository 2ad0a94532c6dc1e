-- Consent records, and the marks the personal-data retention leaves.

-- Every grant or withdrawal of consent, in order; never changed (the trigger below), erased
-- with the account.
CREATE TABLE consent_records (
    seq             bigserial   PRIMARY KEY,
    id              uuid        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose         text        NOT NULL,
    policy_version  text        NOT NULL,
    granted         boolean     NOT NULL,
    ip_address      text,
    user_agent      text,
    created_at      timestamptz NOT NULL,
    -- Set once, when retention truncated or cleared ip_address and user_agent.
    client_redacted boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX consent_records_id_key ON consent_records (id);
CREATE INDEX consent_records_user_idx ON consent_records (user_id, seq);
CREATE INDEX consent_records_created_at_idx ON consent_records (created_at);

ALTER TABLE sessions ADD COLUMN client_redacted boolean NOT NULL DEFAULT false;
ALTER TABLE audit_events ADD COLUMN client_redacted boolean NOT NULL DEFAULT false;
-- What retention has yet to redact, oldest first: the pruner's scan reads only these rows,
-- not every row it already redacted.
CREATE INDEX sessions_unredacted_idx ON sessions (created_at) WHERE NOT client_redacted;
CREATE INDEX audit_events_unredacted_idx ON audit_events (created_at) WHERE NOT client_redacted;
CREATE INDEX consent_records_unredacted_idx ON consent_records (created_at) WHERE NOT client_redacted;

-- Append-only, except for one change: retention redacting the client's address and agent.
-- Nothing else may change, and a redacted row cannot be changed again.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    IF (NEW.id, NEW.user_id, NEW.event, NEW.outcome, NEW.reason, NEW.created_at)
           IS DISTINCT FROM (OLD.id, OLD.user_id, OLD.event, OLD.outcome, OLD.reason, OLD.created_at)
       OR OLD.client_redacted OR NOT NEW.client_redacted THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION consent_records_append_only() RETURNS trigger AS $$
BEGIN
    IF (NEW.seq, NEW.id, NEW.user_id, NEW.purpose, NEW.policy_version, NEW.granted, NEW.created_at)
           IS DISTINCT FROM
       (OLD.seq, OLD.id, OLD.user_id, OLD.purpose, OLD.policy_version, OLD.granted, OLD.created_at)
       OR OLD.client_redacted OR NOT NEW.client_redacted THEN
        RAISE EXCEPTION 'consent_records is append-only';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER consent_records_no_update BEFORE UPDATE ON consent_records
    FOR EACH ROW EXECUTE FUNCTION consent_records_append_only();

-- The policy version the reader last consented to (for the learner background); consents given
-- before records existed were given under version 1, the first default.
ALTER TABLE profiles ADD COLUMN consent_policy_version text;
UPDATE profiles SET consent_policy_version = '1' WHERE consent_given;
INSERT INTO consent_records (id, user_id, purpose, policy_version, granted, created_at)
SELECT gen_random_uuid(), user_id, 'learner_background', '1', true, COALESCE(consent_updated_at, updated_at)
FROM profiles WHERE consent_given;
