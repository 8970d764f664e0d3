-- Claim cron slots: a slot row some node inserted before is left alone
-- (ON CONFLICT DO NOTHING; a concurrent insert of the same slot waits for the
-- other transaction and then skips). Returns only the slots that are new, for
-- which the caller inserts the jobs in the same transaction.
INSERT INTO {schema}.errands_cron_slots (name, slot)
SELECT s.name, to_timestamp(s.slot)
FROM unnest(%(name)s::text[], %(slot)s::float8[]) AS s(name, slot)
ON CONFLICT DO NOTHING
RETURNING name, extract(epoch FROM slot)::float8 AS slot
