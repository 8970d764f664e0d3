-- Migration files name tables unqualified; they run in the errands schema.
SET LOCAL search_path TO {schema}
