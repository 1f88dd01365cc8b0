-- The same schema as migrations/sqlite, in PostgreSQL's terms (BIGINT for SQLite's
-- INTEGER). Several nodes share this database, so every rule that keeps the data
-- straight across nodes is a constraint here, not something one node keeps in memory.

-- Users: names are unique whatever their case, so "Alice" cannot pose as "alice"; the
-- index on lower(name) also serves the lookup by name at sign-in.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user',
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_name_any_case ON users (lower(name));

-- One row per room: last_seq is the per-room counter. A writer locks the row, bumps it
-- and inserts the messages in one transaction, so seq grows by exactly one per stored
-- message, whichever node stores it.
CREATE TABLE rooms (
    name       TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE messages (
    room      TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    user_id   TEXT NOT NULL,
    user_name TEXT NOT NULL,
    body      TEXT NOT NULL,
    nonce     TEXT,
    ts        BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);

-- Idempotent sends: one message per (room, user, nonce), whichever node received it.
CREATE UNIQUE INDEX messages_nonce ON messages (room, user_id, nonce) WHERE nonce IS NOT NULL;
