-- Users, sessions and learner profiles. Times are bound by the application's clock, never
-- taken from now(), so that expiry is decided by one clock and can be tested.

CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    -- Trimmed and lower-cased by the application; the unique index makes concurrent
    -- sign-ups with one address produce exactly one user.
    email          text        NOT NULL,
    name           text        NOT NULL,
    image          text,
    email_verified boolean     NOT NULL DEFAULT false,
    -- Argon2id PHC string; NULL for users who only sign in through a provider.
    password_hash  text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE sessions (
    id             uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- HMAC-SHA256(server secret, token): the token itself is never stored.
    token_hash     bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- Absolute expiry; the idle timeout is applied to last_active_at.
    expires_at     timestamptz NOT NULL,
    last_active_at timestamptz NOT NULL,
    ip_address     text,
    user_agent     text
);
CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE profiles (
    user_id               uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    programming_level     text        CHECK (programming_level IN ('beginner', 'intermediate', 'advanced')),
    -- JSON array of strings.
    programming_languages text        NOT NULL DEFAULT '[]',
    ai_knowledge_level    text        CHECK (ai_knowledge_level IN ('none', 'basic', 'intermediate', 'advanced')),
    hardware_experience   text        CHECK (hardware_experience IN ('none', 'basic', 'robotics', 'embedded_systems')),
    learning_style        text        CHECK (learning_style IN ('theory', 'code_first', 'visual', 'mixed')),
    software_background   text        NOT NULL DEFAULT '',
    hardware_background   text        NOT NULL DEFAULT '',
    role                  text        NOT NULL DEFAULT '',
    -- JSON array of strings.
    interests             text        NOT NULL DEFAULT '[]',
    onboarding_completed  boolean     NOT NULL DEFAULT false,
    consent_given         boolean     NOT NULL DEFAULT false,
    consent_updated_at    timestamptz,
    -- Optimistic concurrency: an update applies only to the version it read.
    version               bigint      NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    -- The consent rule, enforced by the database as well as by the application.
    CONSTRAINT profiles_background_needs_consent CHECK (
        consent_given OR (
            programming_level IS NULL AND programming_languages = '[]'
            AND ai_knowledge_level IS NULL AND hardware_experience IS NULL
            AND software_background = '' AND hardware_background = ''
        )
    )
);
