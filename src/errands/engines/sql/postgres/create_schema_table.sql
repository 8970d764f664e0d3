-- The stored schema version: one row per applied migration.
CREATE TABLE IF NOT EXISTS {schema}.errands_schema (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
