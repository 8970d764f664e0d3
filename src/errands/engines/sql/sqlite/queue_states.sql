-- The queue instructions given to every node (errands_queues), for the watch loop and the CLI.
SELECT name, paused, limit_override, running, version, updated_at
FROM errands_queues
ORDER BY name
