INSERT INTO {schema}.errands_schema (version, name) VALUES (%(version)s, %(name)s)
