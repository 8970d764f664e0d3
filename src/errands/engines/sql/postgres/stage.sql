-- Make due scheduled and retryable jobs available, oldest due first, and wake
-- listeners once per queue touched (the channel is NULL when notifications are off).
WITH due AS MATERIALIZED (
    SELECT id FROM {schema}.errands_jobs
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()
    ORDER BY scheduled_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
staged AS (
    UPDATE {schema}.errands_jobs AS j
    SET state = 'available'
    FROM due
    WHERE j.id = due.id
    RETURNING j.queue
),
queues AS (
    SELECT DISTINCT queue FROM staged
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, queues.queue)) AS n
    FROM queues
    WHERE %(channel)s::text IS NOT NULL
)
SELECT queues.queue FROM queues CROSS JOIN notified
