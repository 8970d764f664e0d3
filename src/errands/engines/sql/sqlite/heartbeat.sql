UPDATE errands_producers SET heartbeat_at = :now
WHERE id IN (SELECT value FROM json_each(:producers))
