-- Forget producers silent for much longer than rescue_after.
DELETE FROM {schema}.errands_producers
WHERE heartbeat_at < now() - make_interval(secs => %(forget_after)s::float8)
