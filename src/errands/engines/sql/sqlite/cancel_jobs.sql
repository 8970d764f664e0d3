-- Bulk cancel: every unfinished job in one of :states matching the optional
-- queue and worker filters. Executing ones are stopped by their node's queue
-- watch; their later acks are stale.
UPDATE errands_jobs
SET state = 'cancelled', finished_at = :now
WHERE state IN (SELECT value FROM json_each(:states))
  AND state IN ('scheduled', 'available', 'retryable', 'executing')
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
