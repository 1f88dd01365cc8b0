-- Users: names are unique whatever their case, so "Alice" cannot pose as "alice".
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user',
    created_at    INTEGER NOT NULL
);

-- One row per room: last_seq is the per-room counter, bumped in the same transaction
-- that inserts the message, so seq grows by exactly one per stored message.
CREATE TABLE rooms (
    name       TEXT PRIMARY KEY NOT NULL,
    last_seq   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE messages (
    room      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    user_id   TEXT NOT NULL,
    user_name TEXT NOT NULL,
    body      TEXT NOT NULL,
    nonce     TEXT,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;

-- Idempotent sends: one message per (room, user, nonce).
CREATE UNIQUE INDEX messages_nonce ON messages (room, user_id, nonce) WHERE nonce IS NOT NULL;
