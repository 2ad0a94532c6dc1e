-- Email verification and password reset tokens, sign-in lockout, and the audit log.

-- Consecutive failed sign-ins and the lock they caused; reset on success.
ALTER TABLE users ADD COLUMN failed_sign_ins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until TEXT;

CREATE TABLE verification_tokens (
    id         BLOB PRIMARY KEY NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- A token redeems only for its purpose: a reset token cannot verify an email.
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'change_email', 'reset_password')),
    -- HMAC-SHA256(server secret, token): the token itself is never stored.
    token_hash BLOB NOT NULL,
    -- The address a change_email token switches to.
    new_email  TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE UNIQUE INDEX verification_tokens_token_hash_key ON verification_tokens (token_hash);
CREATE INDEX verification_tokens_user_purpose_idx ON verification_tokens (user_id, purpose);

-- Security events. No foreign key: the record of an account outlives the account.
CREATE TABLE audit_events (
    id         BLOB PRIMARY KEY NOT NULL,
    user_id    BLOB,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    -- Internal detail (e.g. unknown_email, wrong_password); never shown to the user.
    reason     TEXT,
    ip_address TEXT,
    user_agent TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_events_user_created_idx ON audit_events (user_id, created_at DESC, id DESC);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);

-- Append-only: rows may be pruned by age but never changed.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
