-- Claim up to :limit available jobs of one queue for one producer.
-- attempt is counted here, at fetch, so a job that kills its worker still runs out.
UPDATE errands_jobs
SET state = 'executing',
    attempt = attempt + 1,
    attempted_at = :now,
    attempted_by = :producer
WHERE id IN (
    SELECT id FROM errands_jobs
    WHERE state = 'available'
      AND attempt < max_attempts  -- a spent row (written by hand) is never claimed
      AND queue = :queue
      AND worker IN (SELECT value FROM json_each(:workers))
    ORDER BY priority, scheduled_at, id
    LIMIT :limit
)
RETURNING id, attempt  -- the jobs themselves: claimed_jobs.sql, after COMMIT
