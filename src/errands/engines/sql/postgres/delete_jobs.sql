-- Bulk delete: every job in one of "states" matching the optional queue and
-- worker filters; an executing job is never deleted.
DELETE FROM {schema}.errands_jobs
WHERE state = ANY(%(states)s::text[])
  AND state <> 'executing'
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
