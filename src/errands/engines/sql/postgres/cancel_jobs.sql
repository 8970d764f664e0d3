-- Bulk cancel: every unfinished job in one of "states" matching the optional
-- queue and worker filters. When executing jobs were among them, the nodes'
-- queue watches are woken ('!control') to stop them; their later acks are stale.
WITH targets AS MATERIALIZED (
    SELECT id, state FROM {schema}.errands_jobs
    WHERE state = ANY(%(states)s::text[])
      AND state IN ('scheduled', 'available', 'retryable', 'executing')
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
    FOR UPDATE
),
cancelled AS (
    UPDATE {schema}.errands_jobs AS j
    SET state = 'cancelled', finished_at = now()
    FROM targets AS t
    WHERE j.id = t.id
    RETURNING t.state AS was
),
counted AS (
    SELECT count(*) AS n, count(*) FILTER (WHERE was = 'executing') AS executing
    FROM cancelled
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, '!control')) AS n
    FROM counted
    WHERE %(channel)s::text IS NOT NULL AND counted.executing > 0
)
SELECT counted.n FROM counted, notified
