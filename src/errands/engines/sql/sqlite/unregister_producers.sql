DELETE FROM errands_producers WHERE id IN (SELECT value FROM json_each(:producers))
