DELETE FROM errands_leader WHERE name = 'errands' AND node = :node
