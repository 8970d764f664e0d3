-- errands schema v2 for SQLite: unique jobs and cron slots.
-- Applied once, inside the migration's write transaction (SQLite has no
-- ADD COLUMN IF NOT EXISTS; the stored version keeps it from running twice).
--
-- unique_hash is a job's unique key (hex SHA-256, NULL for a job that is not
-- unique) and unique_states the bitmask of the states in which it blocks its
-- duplicates: scheduled 1, available 2, executing 4, retryable 8, completed 16,
-- cancelled 32, discarded 64 (errands.unique.STATE_BITS). unique_key is the hash
-- while the current state is in that set, else NULL: a generated column, so no
-- statement that changes a state has to maintain it. SQLite can only add a
-- VIRTUAL generated column to an existing table; a unique index over it works.
ALTER TABLE errands_jobs ADD COLUMN unique_hash TEXT;
ALTER TABLE errands_jobs ADD COLUMN unique_states INTEGER NOT NULL DEFAULT 0;
ALTER TABLE errands_jobs ADD COLUMN unique_key TEXT GENERATED ALWAYS AS (
    CASE WHEN unique_states & (CASE state
                                   WHEN 'scheduled' THEN 1
                                   WHEN 'available' THEN 2
                                   WHEN 'executing' THEN 4
                                   WHEN 'retryable' THEN 8
                                   WHEN 'completed' THEN 16
                                   WHEN 'cancelled' THEN 32
                                   WHEN 'discarded' THEN 64
                                   ELSE 0 END) <> 0
         THEN unique_hash END
) VIRTUAL;
CREATE UNIQUE INDEX IF NOT EXISTS errands_jobs_unique
    ON errands_jobs (unique_key) WHERE unique_key IS NOT NULL;

-- One row per cron slot ever inserted (pruned after two catch-up windows):
-- the primary key makes a slot's insert, and so its job, happen at most once.
CREATE TABLE IF NOT EXISTS errands_cron_slots (
    name         TEXT NOT NULL,
    slot         REAL NOT NULL,
    inserted_at  REAL NOT NULL,
    PRIMARY KEY (name, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS errands_cron_slots_slot ON errands_cron_slots (slot);
