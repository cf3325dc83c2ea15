#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this): setup, lint, pytest.
# pytest exits 5 when it collects no tests; set -e turns that into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "not soak_long" --durations=30 "$@"
