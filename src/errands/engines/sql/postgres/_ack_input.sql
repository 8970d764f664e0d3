-- The batch of outcomes as rows a (ack.sql, ack_fetch.sql): one JSON array, built
-- by pg_claim.ack_payload with these fields. A field at its default (no result,
-- no error, no due time, not snoozed) is left out, and so reads as NULL.
FROM json_to_recordset(%(acks)s::json)
     AS a(id bigint, attempt integer, producer text, state text, result text,
          error text, scheduled_at float8, snoozed boolean)
