-- The latest slot inserted for each of these cron entries (entries never
-- inserted have no row): where a node's catch-up starts. :names is a JSON array.
SELECT name, max(slot) AS slot
FROM errands_cron_slots
WHERE name IN (SELECT value FROM json_each(:names))
GROUP BY name
