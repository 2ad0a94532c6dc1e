-- Sign-in through Google, GitHub and OpenID Connect providers (issue 3). 0002 is left to
-- another change; sqlx applies migrations in order and allows the gap.

-- A user's identity at a provider. Provider tokens are stored only as AES-256-GCM
-- ciphertexts (nonce || ciphertext || tag) under the key named by token_key_id, which is
-- derived from the server secret and never stored.
CREATE TABLE accounts (
    id                      uuid        PRIMARY KEY,
    user_id                 uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Configured provider name: google, github or a generic OIDC provider's name.
    provider                text        NOT NULL,
    -- The provider's stable id for the person (OIDC `sub`, GitHub's numeric id).
    provider_account_id     text        NOT NULL,
    -- What the provider last said, for display; never used to sign anyone in.
    email                   text,
    email_verified          boolean     NOT NULL DEFAULT false,
    access_token_enc        bytea       NOT NULL,
    refresh_token_enc       bytea,
    id_token_enc            bytea,
    token_key_id            text        NOT NULL,
    access_token_expires_at timestamptz,
    -- Space-separated scopes the provider granted.
    scopes                  text        NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);
CREATE UNIQUE INDEX accounts_provider_account_key ON accounts (provider, provider_account_id);
CREATE INDEX accounts_user_id_idx ON accounts (user_id);

-- One authorization-code flow in progress: single use, short-lived, bound to its provider
-- and redirect URI. The state is kept as HMAC(server key, state) and the nonce as a hash;
-- the PKCE verifier must be sent to the provider later, so it is encrypted instead.
CREATE TABLE oauth_states (
    state_hash        bytea       PRIMARY KEY,
    provider          text        NOT NULL,
    redirect_uri      text        NOT NULL,
    pkce_verifier_enc bytea       NOT NULL,
    key_id            text        NOT NULL,
    nonce_hash        bytea,
    -- Set when a signed-in user started the flow to link a provider to their account.
    link_user_id      uuid        REFERENCES users (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz
);
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);
