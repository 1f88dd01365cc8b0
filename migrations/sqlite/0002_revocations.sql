-- Tokens of a user issued at or before revoked_at (Unix seconds) are refused.
CREATE TABLE revocations (
    user_id    TEXT PRIMARY KEY NOT NULL,
    revoked_at INTEGER NOT NULL
);
