-- Claim one cron slot; returns a row only if no node inserted it before, in
-- which case the caller inserts its job in the same transaction.
INSERT INTO errands_cron_slots (name, slot, inserted_at)
VALUES (:name, :slot, :now)
ON CONFLICT DO NOTHING
RETURNING name
