DELETE FROM {schema}.errands_leader WHERE name = 'errands' AND node = %(node)s
