-- A person or the API asks for another go: available now, with one more
-- attempt allowed when the job had spent them all; wake the queue's listeners.
WITH retried AS (
    UPDATE {schema}.errands_jobs
    SET state = 'available',
        scheduled_at = now(),
        finished_at = NULL,
        max_attempts = greatest(max_attempts, attempt + 1)
    WHERE id = %(id)s AND state IN ('retryable', 'discarded', 'cancelled', 'completed')
    RETURNING *
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, retried.queue)) AS n
    FROM retried
    WHERE %(channel)s::text IS NOT NULL
)
SELECT retried.* FROM retried CROSS JOIN notified
