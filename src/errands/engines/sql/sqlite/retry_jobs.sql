-- Bulk retry: every job in one of :states (a subset of retryable, discarded,
-- cancelled, completed) matching the optional queue and worker filters becomes
-- available now, with one more attempt allowed when it had spent them all.
-- OR IGNORE skips a unique job whose key another job holds (or that a job
-- retried just before in this statement took): it stays as it was.
UPDATE OR IGNORE errands_jobs
SET state = 'available',
    scheduled_at = :now,
    finished_at = NULL,
    max_attempts = max(max_attempts, attempt + 1)
WHERE state IN (SELECT value FROM json_each(:states))
  AND state IN ('retryable', 'discarded', 'cancelled', 'completed')
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
