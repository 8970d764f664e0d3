-- Claim up to "limit" available jobs of one queue, in priority order: the claim
-- alone, for a producer with no outcomes to record (ack_fetch.sql does both).
-- A plain UPDATE costs the server ~70 us less per claim than ack_fetch with an
-- empty batch of outcomes, and a busy producer claims thousands of times a second.
--
-- SKIP LOCKED lets concurrent producers claim disjoint jobs without waiting;
-- attempt is counted here, at fetch, so a job that kills its worker still runs
-- out of attempts. %(commit)s is 'off' unless the engine has synchronous_acks
-- (see pg_claim.py). set_config runs once, in a materialized CTE: as a subquery
-- joined to the candidates it ran once per candidate row.
-- Each job comes back as one JSON array (times as Unix seconds), which the
-- client decodes in one call instead of column by column.
WITH settings AS MATERIALIZED (
    SELECT set_config('synchronous_commit', %(commit)s::text, true) AS commit_mode
)
-- include: _claim_update
FROM (
    SELECT jobs.id
    FROM {schema}.errands_jobs AS jobs, settings
    WHERE jobs.state = 'available'
      AND jobs.attempt < jobs.max_attempts  -- a spent row (written by hand) is never claimed
      AND jobs.queue = %(queue)s
      AND jobs.worker = ANY(%(workers)s::text[])
    ORDER BY jobs.priority, jobs.scheduled_at, jobs.id
    LIMIT %(limit)s
    FOR UPDATE OF jobs SKIP LOCKED
) AS picked
WHERE j.id = picked.id
-- include: _claimed_job_json
