-- Users, sessions and learner profiles; the same tables and columns as the PostgreSQL schema.
-- UUIDs are 16-byte blobs and times are UTC text written by the application's clock.

CREATE TABLE users (
    id             BLOB    PRIMARY KEY NOT NULL,
    -- Trimmed and lower-cased by the application; the unique index makes concurrent
    -- sign-ups with one address produce exactly one user.
    email          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    image          TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,
    -- Argon2id PHC string; NULL for users who only sign in through a provider.
    password_hash  TEXT,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE sessions (
    id             BLOB    PRIMARY KEY NOT NULL,
    user_id        BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- HMAC-SHA256(server secret, token): the token itself is never stored.
    token_hash     BLOB    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    -- Absolute expiry; the idle timeout is applied to last_active_at.
    expires_at     TEXT    NOT NULL,
    last_active_at TEXT    NOT NULL,
    ip_address     TEXT,
    user_agent     TEXT
);
CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE profiles (
    user_id               BLOB    PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    programming_level     TEXT    CHECK (programming_level IN ('beginner', 'intermediate', 'advanced')),
    -- JSON array of strings.
    programming_languages TEXT    NOT NULL DEFAULT '[]',
    ai_knowledge_level    TEXT    CHECK (ai_knowledge_level IN ('none', 'basic', 'intermediate', 'advanced')),
    hardware_experience   TEXT    CHECK (hardware_experience IN ('none', 'basic', 'robotics', 'embedded_systems')),
    learning_style        TEXT    CHECK (learning_style IN ('theory', 'code_first', 'visual', 'mixed')),
    software_background   TEXT    NOT NULL DEFAULT '',
    hardware_background   TEXT    NOT NULL DEFAULT '',
    role                  TEXT    NOT NULL DEFAULT '',
    -- JSON array of strings.
    interests             TEXT    NOT NULL DEFAULT '[]',
    onboarding_completed  INTEGER NOT NULL DEFAULT 0,
    consent_given         INTEGER NOT NULL DEFAULT 0,
    consent_updated_at    TEXT,
    -- Optimistic concurrency: an update applies only to the version it read.
    version               INTEGER NOT NULL DEFAULT 1,
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL,
    -- The consent rule, enforced by the database as well as by the application.
    CONSTRAINT profiles_background_needs_consent CHECK (
        consent_given OR (
            programming_level IS NULL AND programming_languages = '[]'
            AND ai_knowledge_level IS NULL AND hardware_experience IS NULL
            AND software_background = '' AND hardware_background = ''
        )
    )
);
