-- Return one stopping producer's unfinished jobs at once, without waiting for rescue.
UPDATE {schema}.errands_jobs AS j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END,
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
    scheduled_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'type', 'errands.Shutdown',
        'message', 'worker shut down before the job finished',
        'traceback', NULL,
        'at', extract(epoch FROM now())::float8,
        'attempt', j.attempt))
WHERE j.state = 'executing' AND j.attempted_by = %(producer)s
RETURNING j.state
