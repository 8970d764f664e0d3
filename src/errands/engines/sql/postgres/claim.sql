-- Claim up to "limit" available jobs of one queue, in priority order: the claim
-- alone, for a producer with no outcomes to record (ack_fetch.sql does both).
-- A plain UPDATE costs the server ~70 us less per claim than ack_fetch with an
-- empty batch of outcomes, and a busy producer claims thousands of times a second.
--
-- SKIP LOCKED lets concurrent producers claim disjoint jobs without waiting;
-- attempt is counted here, at fetch, so a job that kills its worker still runs
-- out of attempts. %(commit)s is 'off' unless the engine has synchronous_acks
-- (see pg_claim.py); set_config runs once, in the one-row subquery.
-- Each job comes back as one JSON array (times as Unix seconds), which the
-- client decodes in one call instead of column by column.
-- include: _claim_update
FROM (
    SELECT jobs.id
    FROM {schema}.errands_jobs AS jobs,
         (SELECT set_config('synchronous_commit', %(commit)s::text, true)) AS settings
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
