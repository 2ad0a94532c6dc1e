-- Every change to what GetSession returns for a user (email, verification, the account's
-- update time, disabling), in order. Replicas follow it, with the revocation feed, to evict
-- their cached sessions of that user; rows are pruned with the revocation feed.
CREATE TABLE user_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX user_changes_created_at_idx ON user_changes (created_at);
