SELECT * FROM {schema}.errands_jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
ORDER BY id DESC
LIMIT %(limit)s
