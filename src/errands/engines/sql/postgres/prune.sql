-- Delete a bounded batch of finished jobs, oldest first.
WITH old AS MATERIALIZED (
    SELECT id FROM {schema}.errands_jobs
    WHERE state IN ('completed', 'cancelled', 'discarded')
      AND finished_at < now() - make_interval(secs => %(older_than)s::float8)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.errands_jobs AS j
USING old
WHERE j.id = old.id
