-- Return one stopping producer's unfinished jobs at once, without waiting for rescue.
UPDATE errands_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN :now END,
    scheduled_at = :now,
    errors = json_insert(errors, '$[#]', json_object(
        'type', 'errands.Shutdown',
        'message', 'worker shut down before the job finished',
        'traceback', NULL, 'at', :now, 'attempt', attempt))
WHERE state = 'executing' AND attempted_by = :producer
RETURNING state
