-- One row that /readyz rewrites to learn whether the store can still commit (the
-- server unreachable, read-only or out of disk makes it fail); `probes` counts the
-- rewrites. Every node rewrites the same row.
CREATE TABLE write_probe (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    at     BIGINT NOT NULL,
    probes BIGINT NOT NULL
);
