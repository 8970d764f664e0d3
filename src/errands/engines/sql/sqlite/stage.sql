-- Make due scheduled and retryable jobs available, oldest due first.
UPDATE errands_jobs
SET state = 'available'
WHERE id IN (
    SELECT id FROM errands_jobs
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= :now
    ORDER BY scheduled_at
    LIMIT :limit
)
RETURNING queue
