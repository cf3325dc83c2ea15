#!/usr/bin/env bash
# Dagster UI screenshots over a planted, damaged lake (see scripts/ui_screenshots.py; args are passed on).
# Needs Debian's chromium and the project's `screenshots` extra (playwright), installed here if absent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v chromium >/dev/null || { echo "installing Debian chromium" >&2; apt-get install -y chromium >/dev/null; }
"$root/.venv/bin/python" -c "import playwright" 2>/dev/null \
    || "$root/.venv/bin/python" -m pip install --quiet -e "$root[screenshots]"
exec "$root/.venv/bin/python" "$root/scripts/ui_screenshots.py" "$@"
