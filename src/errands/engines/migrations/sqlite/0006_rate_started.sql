-- errands schema v6 for SQLite: rate limits count their own starts.
-- Applied once, inside the migration's write transaction (SQLite has no
-- ADD COLUMN IF NOT EXISTS; the stored version keeps it from running twice).
--
-- errands_jobs_attempted (queue, attempted_at) served only rate limits, yet every
-- claim of every queue moved its entry (a claim sets attempted_at). rate_started_at is set only by the claim of a queue with a
-- rate_limit (fetch_limited.sql), so the index that replaces it holds only those
-- jobs. Starts recorded before this version are not carried over: for one window
-- after the upgrade a rate-limited queue counts only the starts made since.
ALTER TABLE errands_jobs ADD COLUMN rate_started_at REAL;
DROP INDEX IF EXISTS errands_jobs_attempted;
CREATE INDEX IF NOT EXISTS errands_jobs_rate_started
    ON errands_jobs (queue, rate_started_at) WHERE rate_started_at IS NOT NULL;
