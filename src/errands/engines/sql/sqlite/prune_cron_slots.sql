-- Forget cron slots older than the catch-up windows: no node inserts them again.
-- Each entry's latest slot stays: it tells a node where to start catching up.
DELETE FROM errands_cron_slots AS s
WHERE s.slot < :before
  AND s.slot < (SELECT max(t.slot) FROM errands_cron_slots AS t WHERE t.name = s.name)
