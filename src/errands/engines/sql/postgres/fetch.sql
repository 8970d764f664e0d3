-- Claim up to "limit" available jobs of one queue for one producer.
-- SKIP LOCKED lets concurrent producers claim disjoint jobs without waiting;
-- attempt is counted here, at fetch, so a job that kills its worker still runs out.
WITH picked AS MATERIALIZED (
    SELECT id FROM {schema}.errands_jobs
    WHERE state = 'available'
      AND attempt < max_attempts  -- a spent row (written by hand) is never claimed
      AND queue = %(queue)s
      AND worker = ANY(%(workers)s::text[])
    ORDER BY priority, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.errands_jobs AS j
SET state = 'executing',
    attempt = j.attempt + 1,
    attempted_at = now(),
    attempted_by = %(producer)s
FROM picked
WHERE j.id = picked.id
RETURNING j.*
