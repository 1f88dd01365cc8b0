-- Users banned by an admin: every token of theirs is refused and login too, until an admin
-- enables them again (the row is deleted). Keyed by the token's `sub`, so accounts of an
-- external issuer can be disabled as well as palisade's own.
CREATE TABLE disabled_users (
    user_id     TEXT PRIMARY KEY,
    disabled_at BIGINT NOT NULL
);
