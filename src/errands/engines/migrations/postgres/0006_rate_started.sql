-- errands schema v6 for PostgreSQL: rate limits count their own starts.
-- Idempotent: safe to run twice. Runs with search_path set to the errands schema.
--
-- errands_jobs_attempted (queue, attempted_at) served only rate limits, yet every
-- claim and every ack of every queue wrote an entry in it: an update that changes
-- state is never HOT, and its new row met the index's predicate. Measured on a
-- drain: 2 of 13 WAL records and ~12 % of the server's CPU per job.
-- rate_started_at is set only by the claim of a queue with a rate_limit
-- (fetch_limited.sql), so the index that replaces it holds only those jobs and
-- the claims and acks of every other queue never touch it.
--
-- Adding a NULL column rewrites nothing; building the new index reads the table
-- once (it holds no row yet). Starts recorded before this version are not
-- carried over: for one window after the upgrade a rate-limited queue counts
-- only the starts made since (docs/limits.md).
ALTER TABLE errands_jobs ADD COLUMN IF NOT EXISTS rate_started_at timestamptz;
DROP INDEX IF EXISTS errands_jobs_attempted;
CREATE INDEX IF NOT EXISTS errands_jobs_rate_started
    ON errands_jobs (queue, rate_started_at) WHERE rate_started_at IS NOT NULL;
