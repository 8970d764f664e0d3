-- Bulk retry: every job in one of "states" (a subset of retryable, discarded,
-- cancelled, completed) matching the optional queue and worker filters becomes
-- available now, with one more attempt allowed when it had spent them all;
-- listeners of each queue touched are woken once.
-- A unique job whose key another job holds is skipped (it stays as it was), and
-- of several matching duplicates only the oldest is retried, so the statement
-- never trips the unique index (see docs/unique.md).
WITH matching AS MATERIALIZED (
    SELECT id, unique_hash, unique_states
    FROM {schema}.errands_jobs
    WHERE state = ANY(%(states)s::text[])
      AND state IN ('retryable', 'discarded', 'cancelled', 'completed')
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
),
chosen AS (
    SELECT m.id FROM matching AS m
    WHERE m.unique_hash IS NULL OR m.unique_states & 2 = 0
    UNION ALL
    (SELECT DISTINCT ON (m.unique_hash) m.id
     FROM matching AS m
     WHERE m.unique_hash IS NOT NULL AND m.unique_states & 2 <> 0
       AND NOT EXISTS (SELECT 1 FROM {schema}.errands_jobs AS o
                       WHERE o.unique_key = m.unique_hash AND o.id <> m.id)
     ORDER BY m.unique_hash, m.id)
),
retried AS (
    UPDATE {schema}.errands_jobs AS j
    SET state = 'available',
        scheduled_at = now(),
        finished_at = NULL,
        max_attempts = greatest(j.max_attempts, j.attempt + 1)
    FROM chosen
    WHERE j.id = chosen.id
    RETURNING j.queue
),
queues AS (
    SELECT queue, count(*) AS n FROM retried GROUP BY queue
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, queues.queue)) AS n
    FROM queues
    WHERE %(channel)s::text IS NOT NULL
)
SELECT coalesce(sum(queues.n), 0)::bigint AS n FROM queues, notified
