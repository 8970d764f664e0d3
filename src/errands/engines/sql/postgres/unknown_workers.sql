SELECT DISTINCT worker FROM {schema}.errands_jobs
WHERE state = 'available'
  AND queue = %(queue)s
  AND worker <> ALL(%(workers)s::text[])
LIMIT 20
