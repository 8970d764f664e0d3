-- After a COPY insert (see pg_copy): wake listeners once per queue that got an
-- available job. NOTIFY is sent at commit, so a rolled-back insert wakes nobody.
SELECT count(pg_notify(%(channel)s::text, q.queue)) AS notified
FROM unnest(%(queues)s::text[]) AS q(queue)
