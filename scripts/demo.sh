#!/usr/bin/env bash
# The whole product offline, in one command (README "Two commands"): set up .venv, write 6 closed hours
# of history with planted faults, run the collector against the bundled simulator, and start Dagster on
# http://127.0.0.1:3000 with everything registered and checked. Ctrl-C stops all of it.
# DEMO_SECONDS=N stops after N s (CI); DEMO_DIR (./demo), DEMO_PORT (3000), DEMO_HOURS (6),
# L2_INSTRUMENTS (BTC-USDT-SWAP,ETH-USDT-SWAP). What it does, step by step: scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.demo
