-- Record one attempt's outcome, fenced: only the producer holding this attempt
-- of an executing job may change it; a stale ack matches no row.
UPDATE errands_jobs
SET state = :state,
    result = :result,
    errors = CASE WHEN :error IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(:error)) END,
    scheduled_at = coalesce(:scheduled_at, scheduled_at),
    max_attempts = max_attempts + :snoozed,
    finished_at = CASE WHEN :state IN ('completed', 'cancelled', 'discarded') THEN :now END
WHERE id = :id
  AND state = 'executing'
  AND attempt = :attempt
  AND attempted_by = :producer
