-- Record a producer as alive now, replacing any earlier row with its id.
INSERT INTO {schema}.errands_producers AS p (id, node, queue, pid, started_at, heartbeat_at)
VALUES (%(id)s, %(node)s, %(queue)s, %(pid)s, now(), now())
ON CONFLICT (id) DO UPDATE
SET node = excluded.node,
    queue = excluded.queue,
    pid = excluded.pid,
    started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at
