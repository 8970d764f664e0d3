-- Cancel a job that has not finished. An executing job's later ack is then
-- stale (it no longer matches state = 'executing') and changes nothing.
UPDATE {schema}.errands_jobs
SET state = 'cancelled', finished_at = now()
WHERE id = %(id)s AND state IN ('scheduled', 'available', 'retryable', 'executing')
RETURNING *
