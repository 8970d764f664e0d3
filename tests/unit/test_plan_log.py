"""Adding up PostgreSQL's auto_explain log per errands statement (errands.bench.plan_log)."""

from __future__ import annotations

from errands.bench.plan_log import AUTO_EXPLAIN, statement_names, summarize

# Three entries as PostgreSQL 15 logs them (trimmed): an ack that read the whole
# table, an ack by primary key, and a statement that is not errands'. The ack's
# first line is ack.sql's opening comment; its %(ids)s placeholders read $1.
LOG = """\
2026-11-29 03:27:09.414 UTC [7298] postgres@test LOG:  duration: 15.720 ms  plan:
\tQuery Text: -- Record a batch of outcomes in one statement, fenced: only the producer holding
\t-- this attempt of an executing job may change it; a stale ack matches no row.
\tWITH settings AS (SELECT set_config('synchronous_commit', $2::text, true))
\tSELECT 1
\t
\tCTE Scan on settings  (cost=459.86..459.88 rows=1 width=8) (actual rows=1 loops=1)
\t                ->  Nested Loop  (cost=0.27..458.81 rows=1 width=351) (actual rows=108 loops=1)
\t                      Join Filter: ((j.id = a_1.id) AND (j.attempt = a_1.attempt))
\t                      Rows Removed by Join Filter: 11556
\t                      ->  Seq Scan on errands_jobs j  (cost=0.27..453.66 rows=108 width=126)
\t                            Rows Removed by Filter: 19892
2026-11-29 03:27:09.801 UTC [7302] postgres@test LOG:  duration: 1.256 ms  plan:
\tQuery Text: -- Record a batch of outcomes in one statement, fenced: only the producer holding
\tSELECT 1
\t
\tCTE Scan on settings  (cost=83.38..83.40 rows=1 width=8) (actual rows=1 loops=1)
\t  ->  Bitmap Index Scan on errands_jobs_pkey  (cost=0.00..42.95 rows=10 width=0)
2026-11-29 03:27:10.002 UTC [7302] postgres@test LOG:  statement: SELECT 2
2026-11-29 03:27:10.100 UTC [7290] postgres@test LOG:  duration: 8.436 ms  plan:
\tQuery Text: SELECT queue, state, count(*) AS n FROM "errands_bench".errands_jobs GROUP BY 1, 2
\tHashAggregate  (cost=1.05..1.06 rows=1 width=1) (actual rows=1 loops=1)
\t  ->  Seq Scan on errands_jobs  (cost=0.00..1.05 rows=1 width=0) (actual rows=0 loops=1)
"""


def test_each_errands_statement_is_named_by_its_sql_file() -> None:
    names = statement_names()
    ack = "-- Record a batch of outcomes in one statement, fenced: only the producer holding"
    assert names[ack] == "ack"
    assert not any(name.startswith("_") for name in names.values())  # includes are not statements
    # A placeholder in the opening comment is matched whatever the server numbered it.
    reserve = (
        "2026-11-29 03:27:08.600 UTC [7264] postgres@test LOG:  duration: 6.835 ms  plan:\n"
        "\tQuery Text: -- Before a COPY insert (see pg_copy): draw $1 ids from the jobs table's\n"
        "\tResult  (cost=0.00..0.01 rows=1 width=4) (actual rows=1 loops=1)\n"
    )
    [stats] = summarize(reserve, names)
    assert stats.name == "copy_reserve"


def test_the_log_adds_up_per_statement_slowest_first() -> None:
    ack, other = summarize(LOG, statement_names())
    assert (ack.name, ack.runs, ack.whole_table_runs) == ("ack", 2, 1)
    assert ack.total_ms == 15.720 + 1.256 and ack.max_ms == 15.720
    assert ack.mean_ms == (15.720 + 1.256) / 2
    assert ack.rows_dropped == 11556 + 19892
    # Not an errands file: named by its first line; a plain statement line is no entry.
    assert other.name.startswith("SELECT queue, state, count(*)")
    assert (other.runs, other.whole_table_runs, other.rows_dropped) == (1, 1, 0)


def test_the_options_log_every_plan_with_its_rows() -> None:
    assert "session_preload_libraries=auto_explain" in AUTO_EXPLAIN
    assert "auto_explain.log_min_duration=0" in AUTO_EXPLAIN
    assert "auto_explain.log_analyze=on" in AUTO_EXPLAIN
