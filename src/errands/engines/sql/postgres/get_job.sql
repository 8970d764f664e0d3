SELECT * FROM {schema}.errands_jobs WHERE id = %(id)s
