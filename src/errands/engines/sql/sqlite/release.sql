-- Hand back a job a producer claimed ahead of free slots but never started (the
-- queue was paused or is stopping): it becomes available again as if never
-- claimed, in the same place in line, and the attempt the claim counted is
-- given back. Fenced like an ack: a job cancelled or rescued meanwhile is left alone.
UPDATE errands_jobs
SET state = 'available',
    attempt = attempt - 1,
    attempted_by = NULL,
    attempted_at = CASE WHEN attempt > 1 THEN attempted_at END,
    rate_started_at = CASE WHEN attempt > 1 THEN rate_started_at END
WHERE id = :id
  AND state = 'executing'
  AND attempt = :attempt
  AND attempted_by = :producer
