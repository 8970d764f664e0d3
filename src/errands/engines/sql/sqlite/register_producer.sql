INSERT OR REPLACE INTO errands_producers (id, node, queue, pid, started_at, heartbeat_at)
VALUES (:id, :node, :queue, :pid, :now, :now)
