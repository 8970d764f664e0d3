SELECT DISTINCT worker FROM errands_jobs
WHERE state = 'available'
  AND queue = :queue
  AND worker NOT IN (SELECT value FROM json_each(:workers))
LIMIT 20
