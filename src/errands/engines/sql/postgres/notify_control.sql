-- Wake every node's queue watch now (payload '!control', which no queue name can
-- be): a job was cancelled, perhaps while executing somewhere.
SELECT pg_notify(%(channel)s::text, '!control')
