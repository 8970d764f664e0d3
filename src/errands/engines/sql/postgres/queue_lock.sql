-- Serialize the claimers of one limited queue (released at commit), so that the
-- count-then-claim of fetch_limited, run next in the same transaction with a
-- fresh snapshot, sees every claim committed before it.
SELECT pg_advisory_xact_lock(hashtextextended('errands.queue:' || %(key)s::text, 0))
