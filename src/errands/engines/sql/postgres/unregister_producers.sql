DELETE FROM {schema}.errands_producers WHERE id = ANY(%(producers)s::text[])
