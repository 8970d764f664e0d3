-- Take the lease when it is free or expired, or renew it when we hold it.
-- term grows with every change of leader: it fences a deposed leader's work.
INSERT INTO {schema}.errands_leader AS l (name, node, term, expires_at)
VALUES ('errands', %(node)s, 1, now() + make_interval(secs => %(ttl)s::float8))
ON CONFLICT (name) DO UPDATE
SET term = CASE WHEN l.node = excluded.node THEN l.term ELSE l.term + 1 END,
    node = excluded.node,
    expires_at = excluded.expires_at
WHERE l.node = excluded.node OR l.expires_at < now()
RETURNING l.node, l.term
