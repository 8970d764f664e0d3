-- An ack's UPDATE (ack.sql, ack_fetch.sql; each goes on with FROM the outcomes
-- AS a and the fence): the outcome of one attempt. result and error arrive as
-- JSON texts, so a result that is JSON null is stored as jsonb null; an error is
-- appended to the job's errors; a snooze allows one more attempt.
UPDATE {schema}.errands_jobs AS j
SET state = a.state,
    result = a.result::jsonb,
    errors = CASE WHEN a.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(a.error::jsonb) END,
    scheduled_at = coalesce(to_timestamp(a.scheduled_at), j.scheduled_at),
    max_attempts = j.max_attempts + CASE WHEN a.snoozed THEN 1 ELSE 0 END,
    finished_at = CASE WHEN a.state IN ('completed', 'cancelled', 'discarded')
                       THEN now() END
