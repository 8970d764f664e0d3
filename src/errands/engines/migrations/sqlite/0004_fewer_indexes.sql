-- errands schema v4 for SQLite: one index less to keep up on every state change.
-- Idempotent: safe to run twice.
--
-- Every claim and every outcome changes a job's state, and SQLite updates each
-- index holding state in the same write, under the one write lock: the general
-- (state, queue) index cost ~3.4 of ~26 us per job in a claim-and-ack loop.
-- Nothing needs it: counts by state scan the table, and every other lookup has
-- a partial index of its own (as on PostgreSQL, whose v4 drops it too).
DROP INDEX IF EXISTS errands_jobs_state_queue;
