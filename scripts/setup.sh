#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install okx-l2 with its dev extras; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "okx-l2 needs Python >= 3.11")'
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# an editable install: only a changed pyproject.toml (dependencies, console scripts) needs pip again
STAMP=.venv/.okx-l2-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$WANT" > "$STAMP"
fi
