-- Service mesh: signing keys for access tokens, the revocation feed, and disabled users.

-- Set while an operator has disabled the user: no sign-in, no valid session.
ALTER TABLE users ADD COLUMN disabled_at TEXT;

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    -- EdDSA, ES256 or RS256.
    algorithm     TEXT NOT NULL,
    -- PKCS#8 DER of the private key, encrypted with AES-256-GCM under a key derived from the
    -- server secret (cipher_key_id names it); bound to the kid as associated data.
    private_key   BLOB NOT NULL,
    cipher_key_id TEXT NOT NULL,
    -- The public JWK, as published.
    public_jwk    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    -- When a newer key took over; published until every token it signed has expired.
    retired_at    TEXT
);

-- Every session revocation, in order, for WatchRevocations (resume by id).
CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX revocations_created_at_idx ON revocations (created_at);
