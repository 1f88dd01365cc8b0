-- One row that /readyz rewrites to learn whether the store can still commit
-- (a full or read-only disk makes it fail); `probes` counts the rewrites.
CREATE TABLE write_probe (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    at     INTEGER NOT NULL,
    probes INTEGER NOT NULL
);
