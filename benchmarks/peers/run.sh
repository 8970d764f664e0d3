#!/usr/bin/env bash
# Measure errands against its peers side by side (see docs/benchmarks.md, "Against the peers").
#
#   benchmarks/peers/run.sh --runs 3 --output benchmarks/peers/results/latest.json
#
# Creates a venv of its own ($PEERS_VENV, default benchmarks/peers/.venv, gitignored),
# installs errands from this repository (editable, with [postgres]) and each peer of
# requirements.txt, then runs `python -m benchmarks.peers.compare` with the arguments given.
# Needs PostgreSQL ($PEERS_PG_URL, default postgresql://postgres@127.0.0.1:5432/test; one
# database per library is created beside it) and Redis ($PEERS_REDIS_URL, default
# redis://127.0.0.1:6379; dbs 11 to 13 are flushed). oban-py needs Python >= 3.12:
# set $PEERS_PYTHON to choose the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PEERS_VENV:-$here/.venv}"

is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

pick_python() {
    if [ -n "${PEERS_PYTHON:-}" ]; then echo "$PEERS_PYTHON"; return; fi
    local candidate
    for candidate in python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null && is_312 "$candidate"; then
            echo "$candidate"; return
        fi
    done
    if command -v pyenv >/dev/null; then  # installed but not on PATH (pyenv shims)
        for candidate in "$(pyenv root)"/versions/3.1[2-9]*/bin/python3; do
            if [ -x "$candidate" ] && is_312 "$candidate"; then echo "$candidate"; return; fi
        done
    fi
    echo "run.sh: no Python >= 3.12 found; using python3 (oban-py will be skipped)" >&2
    echo python3
}

if [ ! -x "$venv/bin/python" ]; then
    python="$(pick_python)"
    echo "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

"$venv/bin/python" -m pip install --quiet -e "$root[postgres]"
while IFS= read -r requirement; do
    requirement="${requirement%%#*}"
    [ -z "${requirement// /}" ] && continue
    if ! "$venv/bin/python" -m pip install --quiet "$requirement"; then
        echo "run.sh: could not install '$requirement'; compare.py will report it as not measured"
    fi
done < "$here/requirements.txt"

cd "$root"
exec "$venv/bin/python" -m benchmarks.peers.compare "$@"
