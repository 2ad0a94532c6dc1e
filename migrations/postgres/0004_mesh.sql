-- Service mesh: signing keys for access tokens, the revocation feed, and disabled users.

-- Set while an operator has disabled the user: no sign-in, no valid session.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;

CREATE TABLE signing_keys (
    kid           text        PRIMARY KEY,
    -- EdDSA, ES256 or RS256.
    algorithm     text        NOT NULL,
    -- PKCS#8 DER of the private key, encrypted with AES-256-GCM under a key derived from the
    -- server secret (cipher_key_id names it); bound to the kid as associated data.
    private_key   bytea       NOT NULL,
    cipher_key_id text        NOT NULL,
    -- The public JWK, as published.
    public_jwk    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    -- When a newer key took over; published until every token it signed has expired.
    retired_at    timestamptz
);

-- Every session revocation, in order, for WatchRevocations (resume by id).
CREATE TABLE revocations (
    id         bigserial   PRIMARY KEY,
    session_id uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    reason     text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX revocations_created_at_idx ON revocations (created_at);
