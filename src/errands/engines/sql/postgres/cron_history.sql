-- The latest slot inserted for each of these cron entries (entries never
-- inserted have no row): where a node's catch-up starts.
SELECT name, extract(epoch FROM max(slot))::float8 AS slot
FROM {schema}.errands_cron_slots
WHERE name = ANY(%(names)s::text[])
GROUP BY name
