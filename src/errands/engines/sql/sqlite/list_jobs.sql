SELECT * FROM errands_jobs
WHERE (:state IS NULL OR state = :state)
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
ORDER BY id DESC
LIMIT :limit
