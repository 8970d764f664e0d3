-- Record a batch of outcomes and claim up to "limit" jobs of one queue, in ONE
-- statement (one round trip, one plan, prepared after a few runs). fetch alone
-- is this statement too, with no outcomes; ack alone is ack.sql.
--
-- Outcomes are fenced: only the producer holding this attempt of an executing
-- job may change it; a stale ack matches no row. They arrive as one JSON array
-- (pg_claim.ack_payload) whose result and error are JSON texts, so a result that
-- is JSON null is stored as jsonb null.
--
-- The claim takes available jobs in priority order; SKIP LOCKED lets concurrent
-- producers claim disjoint jobs without waiting; attempt is counted here, at
-- fetch, so a job that kills its worker still runs out of attempts. The acked
-- rows are executing and the claimed ones available, so the two never touch the
-- same row.
--
-- %(commit)s is 'off' unless the engine has synchronous_acks: see pg_claim.py.
-- Each claimed job comes back as one JSON array (times as Unix seconds), which
-- the client decodes in one call instead of column by column.
WITH settings AS (
    SELECT set_config('synchronous_commit', %(commit)s::text, true) AS commit_mode
),
input AS (
    SELECT *
    -- include: _ack_input
),
-- The jobs of the outcomes are found by primary key (%(ids)s, the batch's ids,
-- hidden from the planner as in ack.sql) and locked, skipping rows another
-- transaction has locked (an operator's UPDATE, a rescue): waiting for them
-- would stall the claim too. The client hands the skipped ones back to the
-- completer, whose plain ack (ack.sql) waits its turn. The fence is checked on
-- the locked rows, which nothing else can change before the UPDATE; no
-- condition on the table names the state, which would steer the planner to the
-- index of executing jobs (see ack.sql).
lockable AS MATERIALIZED (
    SELECT j.id, j.state, j.attempt, j.attempted_by
    FROM {schema}.errands_jobs AS j
    WHERE j.id = ANY((SELECT %(ids)s::int8[])::int8[])
    FOR UPDATE OF j SKIP LOCKED
),
fenced AS MATERIALIZED (
    SELECT l.id FROM lockable AS l JOIN input AS a ON a.id = l.id
    WHERE l.state = 'executing' AND l.attempt = a.attempt AND l.attempted_by = a.producer
),
skipped AS (
    SELECT a.id FROM input AS a WHERE a.id NOT IN (SELECT id FROM lockable)
),
acked AS (
    -- include: _ack_update
    FROM input AS a
    WHERE j.id = a.id
      AND j.id = ANY((SELECT %(ids)s::int8[])::int8[])
      AND j.id IN (SELECT id FROM fenced)
    RETURNING 1
),
picked AS MATERIALIZED (
    SELECT id FROM {schema}.errands_jobs
    WHERE state = 'available'
      AND attempt < max_attempts  -- a spent row (written by hand) is never claimed
      AND queue = %(queue)s
      AND worker = ANY(%(workers)s::text[])
    ORDER BY priority, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    -- include: _claim_update
    FROM picked
    WHERE j.id = picked.id
    -- include: _claimed_job_json
)
SELECT (SELECT count(*) FROM acked) AS acked,
       (SELECT coalesce(array_agg(id), '{{}}') FROM skipped) AS skipped,
       claimed.id, claimed.attempt, claimed.job
FROM settings LEFT JOIN claimed ON true
