-- Email verification and password reset tokens, sign-in lockout, and the audit log.

-- Consecutive failed sign-ins and the lock they caused; reset on success.
ALTER TABLE users ADD COLUMN failed_sign_ins integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until timestamptz;

CREATE TABLE verification_tokens (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- A token redeems only for its purpose: a reset token cannot verify an email.
    purpose    text        NOT NULL CHECK (purpose IN ('verify_email', 'change_email', 'reset_password')),
    -- HMAC-SHA256(server secret, token): the token itself is never stored.
    token_hash bytea       NOT NULL,
    -- The address a change_email token switches to.
    new_email  text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE UNIQUE INDEX verification_tokens_token_hash_key ON verification_tokens (token_hash);
CREATE INDEX verification_tokens_user_purpose_idx ON verification_tokens (user_id, purpose);

-- Security events. No foreign key: the record of an account outlives the account.
CREATE TABLE audit_events (
    id         uuid        PRIMARY KEY,
    user_id    uuid,
    event      text        NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    -- Internal detail (e.g. unknown_email, wrong_password); never shown to the user.
    reason     text,
    ip_address text,
    user_agent text,
    created_at timestamptz NOT NULL
);
CREATE INDEX audit_events_user_created_idx ON audit_events (user_id, created_at DESC, id DESC);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);

-- Append-only: rows may be pruned by age but never changed.
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
