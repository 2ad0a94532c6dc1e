-- Sign-in through Google, GitHub and OpenID Connect providers (issue 3); the same tables and
-- columns as the PostgreSQL schema. 0002 is left to another change; sqlx allows the gap.

-- A user's identity at a provider. Provider tokens are stored only as AES-256-GCM
-- ciphertexts (nonce || ciphertext || tag) under the key named by token_key_id, which is
-- derived from the server secret and never stored.
CREATE TABLE accounts (
    id                      BLOB        PRIMARY KEY NOT NULL,
    user_id                 BLOB        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Configured provider name: google, github or a generic OIDC provider's name.
    provider                TEXT        NOT NULL,
    -- The provider's stable id for the person (OIDC `sub`, GitHub's numeric id).
    provider_account_id     TEXT        NOT NULL,
    -- What the provider last said, for display; never used to sign anyone in.
    email                   TEXT,
    email_verified          INTEGER     NOT NULL DEFAULT 0,
    access_token_enc        BLOB        NOT NULL,
    refresh_token_enc       BLOB,
    id_token_enc            BLOB,
    token_key_id            TEXT        NOT NULL,
    access_token_expires_at TEXT,
    -- Space-separated scopes the provider granted.
    scopes                  TEXT        NOT NULL DEFAULT '',
    created_at              TEXT        NOT NULL,
    updated_at              TEXT        NOT NULL
);
CREATE UNIQUE INDEX accounts_provider_account_key ON accounts (provider, provider_account_id);
CREATE INDEX accounts_user_id_idx ON accounts (user_id);

-- One authorization-code flow in progress: single use, short-lived, bound to its provider
-- and redirect URI. The state is kept as HMAC(server key, state) and the nonce as a hash;
-- the PKCE verifier must be sent to the provider later, so it is encrypted instead.
CREATE TABLE oauth_states (
    state_hash        BLOB        PRIMARY KEY NOT NULL,
    provider          TEXT        NOT NULL,
    redirect_uri      TEXT        NOT NULL,
    pkce_verifier_enc BLOB        NOT NULL,
    key_id            TEXT        NOT NULL,
    nonce_hash        BLOB,
    -- Set when a signed-in user started the flow to link a provider to their account.
    link_user_id      BLOB        REFERENCES users (id) ON DELETE CASCADE,
    created_at        TEXT        NOT NULL,
    expires_at        TEXT        NOT NULL,
    used_at           TEXT
);
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);
