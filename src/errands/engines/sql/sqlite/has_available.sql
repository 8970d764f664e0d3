-- A read-only probe run before the claim, so an idle poll never takes the write lock.
SELECT 1 FROM errands_jobs
WHERE state = 'available'
  AND attempt < max_attempts
  AND queue = :queue
  AND worker IN (SELECT value FROM json_each(:workers))
LIMIT 1
