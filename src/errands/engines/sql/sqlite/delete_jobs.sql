-- Bulk delete: every job in one of :states matching the optional queue and
-- worker filters; an executing job is never deleted.
DELETE FROM errands_jobs
WHERE state IN (SELECT value FROM json_each(:states))
  AND state <> 'executing'
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
