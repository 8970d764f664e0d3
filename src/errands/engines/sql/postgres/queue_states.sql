-- The queue instructions given to every node (errands_queues), for the watch loop and the CLI.
SELECT name, paused, limit_override, running, version,
       extract(epoch FROM updated_at)::float8 AS updated_at
FROM {schema}.errands_queues
ORDER BY name
