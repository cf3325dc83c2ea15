#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this): setup, lint, pytest.
# pytest exits 5 when it collects no tests; set -e turns that into a failure.
# With arguments, one pytest run over them. Without, the whole suite in two runs: the pipeline's
# tests in two worker processes (pytest-xdist; CPU-bound Dagster runs, nothing timed), then the
# collector's one at a time (its end-to-end tests time real processes on the machine's 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
pytest=(.venv/bin/python -m pytest -q -m "not soak_long and not fuzz")  # long soak, fuzzing: README "Long runs"
if [ $# -gt 0 ]; then
    exec "${pytest[@]}" "$@"
fi
"${pytest[@]}" --durations=15 -n 2 l2_pipeline_tests
"${pytest[@]}" --durations=15 collector_tests
