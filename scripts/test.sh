#!/usr/bin/env bash
# The project's test command (README "Two commands on a fresh machine"; CI runs exactly this): setup, lint, pytest.
# pytest exits 5 when it collects no tests; set -e turns that into a failure.
# With arguments, one pytest run over them. Without, the whole suite in two runs: everything but the
# collector's end-to-end tests and short soak in two worker processes (pytest-xdist; nothing in them
# is timed), then those one at a time (marked `timed` by conftest.py: they time real collector and
# simulator processes on the machine's 2 cores), with l2_pipeline_tests/test_distributed_runs.py
# (marked `timed` itself: a dozen processes, Celery workers and a broker among them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
pytest=(.venv/bin/python -m pytest -q)
if [ $# -gt 0 ]; then
    exec "${pytest[@]}" -m "not soak_long and not fuzz" "$@"  # long soak, fuzzing: docs/TESTING.md "Long runs"
fi
"${pytest[@]}" --durations=15 -n 2 -m "not soak_long and not fuzz and not timed" l2_lake_tests l2_pipeline_tests collector_tests
"${pytest[@]}" --durations=15 -m "timed and not soak_long and not fuzz" collector_tests l2_pipeline_tests
