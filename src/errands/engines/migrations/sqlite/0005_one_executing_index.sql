-- errands schema v5 for SQLite: one index less to update on every claim and outcome.
-- Idempotent: safe to run twice.
--
-- errands_jobs_executing (attempted_by) and errands_jobs_executing_queue (queue)
-- both hold exactly the executing jobs, so each claim inserted, and each outcome
-- deleted, an entry in both. Executing jobs are few (the sum of the processes'
-- limits): rescue and shutdown, which look them up by producer, scan
-- errands_jobs_executing_queue instead (EXPLAIN QUERY PLAN shows it).
DROP INDEX IF EXISTS errands_jobs_executing;
