-- Key rotation across replicas: a new key is published before it signs, so that every replica
-- and every verifier's cached JWK Set knows it by then. activates_at is when it starts signing
-- (the previous key's retired_at is the same moment).
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL;
