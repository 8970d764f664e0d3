-- Return executing jobs of producers that stopped heart-beating (or are gone)
-- to available, or discard them when their attempts are spent.
UPDATE {schema}.errands_jobs AS j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END,
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
    scheduled_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'type', 'errands.Rescued',
        'message', 'producer ' || coalesce(j.attempted_by, '?') || ' stopped heart-beating',
        'traceback', NULL,
        'at', extract(epoch FROM now())::float8,
        'attempt', j.attempt))
WHERE j.state = 'executing'
  AND NOT EXISTS (
        SELECT 1 FROM {schema}.errands_producers AS p
        WHERE p.id = j.attempted_by
          AND p.heartbeat_at >= now() - make_interval(secs => %(rescue_after)s::float8))
RETURNING j.state
