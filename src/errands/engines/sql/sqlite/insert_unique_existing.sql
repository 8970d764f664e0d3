-- The jobs holding these unique keys now (:keys is a JSON array of keys).
SELECT * FROM errands_jobs
WHERE unique_key IN (SELECT value FROM json_each(:keys))
