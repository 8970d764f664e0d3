DELETE FROM {schema}.errands_jobs WHERE id = %(id)s AND state <> 'executing'
