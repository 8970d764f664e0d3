-- A read-only probe run before a limited claim, so an idle poll of a limited
-- queue takes neither a transaction nor the queue's lock.
SELECT 1 AS found FROM {schema}.errands_jobs
WHERE state = 'available'
  AND attempt < max_attempts
  AND queue = %(queue)s
  AND worker = ANY(%(workers)s::text[])
LIMIT 1
