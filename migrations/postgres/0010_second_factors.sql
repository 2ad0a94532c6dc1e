-- Second factors (authenticator apps and passkeys), recovery codes, sign-in challenges waiting
-- for a second factor, WebAuthn ceremonies in progress, and the assurance a session was created
-- with.

CREATE TABLE factors (
    id             uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           text        NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name           text        NOT NULL,
    -- TOTP: the shared secret, AES-256-GCM under the server secret's key `key_id`, bound to
    -- the id.
    secret_enc     bytea,
    key_id         text,
    -- Passkeys: the credential id, and the public key, counter and flags (webauthn-rs's
    -- `Passkey`, JSON). Nothing secret.
    credential_id  bytea,
    passkey        text,
    created_at     timestamptz NOT NULL,
    -- NULL while enrollment waits for its first code; pending rows expire.
    confirmed_at   timestamptz,
    expires_at     timestamptz,
    -- The last time step whose code was accepted: a code is never accepted twice (RFC 6238 5.2).
    last_used_step bigint,
    last_used_at   timestamptz
);
CREATE INDEX factors_user_idx ON factors (user_id);
-- One active authenticator app per user.
CREATE UNIQUE INDEX factors_one_totp_key ON factors (user_id) WHERE kind = 'totp' AND confirmed_at IS NOT NULL;
-- A credential belongs to one account.
CREATE UNIQUE INDEX factors_credential_id_key ON factors (credential_id);

CREATE TABLE recovery_codes (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- HMAC-SHA256(server secret, normalised code): the code itself is never stored.
    code_hash  bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE UNIQUE INDEX recovery_codes_hash_key ON recovery_codes (code_hash);
CREATE INDEX recovery_codes_user_idx ON recovery_codes (user_id);

CREATE TABLE second_factor_challenges (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- HMAC-SHA256(server secret, token).
    token_hash   bytea       NOT NULL,
    -- The first factor that produced it: 'pwd' or 'oauth'.
    first_factor text        NOT NULL,
    -- Wrong codes presented with it.
    failures     integer     NOT NULL DEFAULT 0,
    -- With passkeys: the WebAuthn authentication state (its challenge) for the user's passkeys.
    passkey_state text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE UNIQUE INDEX second_factor_challenges_hash_key ON second_factor_challenges (token_hash);
CREATE INDEX second_factor_challenges_user_idx ON second_factor_challenges (user_id);
CREATE INDEX second_factor_challenges_expires_at_idx ON second_factor_challenges (expires_at);

-- WebAuthn ceremonies between their two calls: a passkey registration (of a user) or a
-- passwordless sign-in (of nobody yet). Single use; lapse after 5 minutes.
CREATE TABLE passkey_ceremonies (
    id         uuid        PRIMARY KEY,
    user_id    uuid        REFERENCES users (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind IN ('register', 'sign_in')),
    -- webauthn-rs's registration or authentication state (JSON): the challenge and policy.
    state      text        NOT NULL,
    -- Registration: the name the passkey will get.
    name       text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX passkey_ceremonies_user_idx ON passkey_ceremonies (user_id);
CREATE INDEX passkey_ceremonies_expires_at_idx ON passkey_ceremonies (expires_at);

-- Sessions from before this migration were made by one factor; which is not known, so 'pwd'.
ALTER TABLE sessions ADD COLUMN aal integer NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN amr text NOT NULL DEFAULT 'pwd';
