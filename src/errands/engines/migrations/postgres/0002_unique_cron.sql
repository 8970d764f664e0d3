-- errands schema v2 for PostgreSQL: unique jobs and cron slots. Idempotent.
--
-- unique_hash is a job's unique key (hex SHA-256, NULL for a job that is not
-- unique) and unique_states the bitmask of the states in which it blocks its
-- duplicates: scheduled 1, available 2, executing 4, retryable 8, completed 16,
-- cancelled 32, discarded 64 (errands.unique.STATE_BITS). unique_key is the hash
-- while the current state is in that set, else NULL: a stored generated column,
-- so no statement that changes a state has to maintain it, under a partial
-- unique index. Adding a stored column rewrites the table once.
ALTER TABLE errands_jobs ADD COLUMN IF NOT EXISTS unique_hash text;
ALTER TABLE errands_jobs ADD COLUMN IF NOT EXISTS unique_states smallint NOT NULL DEFAULT 0;
ALTER TABLE errands_jobs ADD COLUMN IF NOT EXISTS unique_key text GENERATED ALWAYS AS (
    CASE WHEN unique_states & (CASE state
                                   WHEN 'scheduled' THEN 1
                                   WHEN 'available' THEN 2
                                   WHEN 'executing' THEN 4
                                   WHEN 'retryable' THEN 8
                                   WHEN 'completed' THEN 16
                                   WHEN 'cancelled' THEN 32
                                   WHEN 'discarded' THEN 64
                                   ELSE 0 END)::smallint <> 0
         THEN unique_hash END
) STORED;
CREATE UNIQUE INDEX IF NOT EXISTS errands_jobs_unique
    ON errands_jobs (unique_key) WHERE unique_key IS NOT NULL;

-- One row per cron slot ever inserted (pruned after two catch-up windows):
-- the primary key makes a slot's insert, and so its job, happen at most once.
CREATE TABLE IF NOT EXISTS errands_cron_slots (
    name         text        NOT NULL,
    slot         timestamptz NOT NULL,
    inserted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, slot)
);
CREATE INDEX IF NOT EXISTS errands_cron_slots_slot ON errands_cron_slots (slot);
