-- Return executing jobs of producers that stopped heart-beating (or are gone)
-- to available, or discard them when their attempts are spent.
UPDATE errands_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN :now END,
    scheduled_at = :now,
    errors = json_insert(errors, '$[#]', json_object(
        'type', 'errands.Rescued',
        'message', 'producer ' || coalesce(attempted_by, '?') || ' stopped heart-beating',
        'traceback', NULL, 'at', :now, 'attempt', attempt))
WHERE state = 'executing'
  AND (attempted_by IS NULL OR attempted_by NOT IN (
        SELECT id FROM errands_producers WHERE heartbeat_at >= :cutoff))
RETURNING state
