UPDATE {schema}.errands_producers SET heartbeat_at = now()
WHERE id = ANY(%(producers)s::text[])
