"""``python -m tests.chaos``: run every chaos scenario on every engine and print the table.

Options: ``--scale N`` (default ``$ERRANDS_CHAOS_SCALE`` or 1, the CI size),
``--engine sqlite|postgres``, ``--only NAME[,NAME]``, ``--skip-restart`` (leave
the PostgreSQL server alone), ``--write-docs`` (record the table in
docs/reliability.md). Exits 1 if any scenario found a problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tests.chaos.harness import Result
from tests.chaos.report import table, update_docs
from tests.chaos.scenarios import SCENARIOS, all_runs, pg_restart_allowed, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default=None)
    parser.add_argument("--only", default=None, help="comma-separated scenario names")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    scale = args.scale
    if scale is None:
        scale = float(os.environ.get("ERRANDS_CHAOS_SCALE", "1"))
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {sorted(only - set(SCENARIOS))}; know {list(SCENARIOS)}")
    results: list[Result] = []
    began = time.monotonic()
    for name, engine in all_runs():
        if (only and name not in only) or (args.engine and engine != args.engine):
            continue
        if name == "postgres-restart" and (args.skip_restart or pg_restart_allowed()):
            print(f"-- skipping {name}: {pg_restart_allowed() or '--skip-restart'}", flush=True)
            continue
        result = run_scenario(name, engine, scale, seed=args.seed)
        print(result.summary(), flush=True)
        results.append(result)
    command = "python -m tests.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(results, command=command.strip())
    print()
    print(text)
    print(f"total {time.monotonic() - began:.0f}s")
    if args.write_docs:
        update_docs("chaos-results", text)
        print("recorded in docs/reliability.md")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
