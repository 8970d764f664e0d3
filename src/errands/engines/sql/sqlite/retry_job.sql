-- A person or the API asks for another go: available now, with one more
-- attempt allowed when the job had spent them all.
UPDATE errands_jobs
SET state = 'available',
    scheduled_at = :now,
    finished_at = NULL,
    max_attempts = max(max_attempts, attempt + 1)
WHERE id = :id AND state IN ('retryable', 'discarded', 'cancelled', 'completed')
RETURNING *
