-- Tokens of a user issued at or before revoked_at (Unix seconds) are refused.
CREATE TABLE revocations (
    user_id    TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);
