-- A read-only probe run before a limited claim (outside the write lock): is there
-- a job some partition has room for? The same counts as fetch_limited.sql (both
-- include _limited_ranked.sql); when nothing is claimable, the claim does not take
-- the lock.
-- include: _limited_ranked
SELECT 1 FROM ranked WHERE kind = 0 AND rn <= room LIMIT 1
