DELETE FROM errands_producers WHERE heartbeat_at < :cutoff
