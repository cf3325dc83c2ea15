#!/usr/bin/env bash
# Reproduces docs/PERFORMANCE.md: every benchmark once, in one go (about 45 minutes, 2 cores).
# Figures are ratios measured within each run; absolute times depend on the machine and its load.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
echo "== 1. hot path vs orjson.loads floor";        $PY -m bench.hot_path --frames 200000 --repeat 3
echo "== 2. side by side with cryptofeed";          [ -x bench/.cf-venv/bin/python ] || $PY -m bench.cryptofeed_compare --setup
                                                    $PY -m bench.cryptofeed_compare --frames 100000 --repeat 3
echo "== 3. writing snapshot records";              $PY -m bench.write_records
echo "== 4. whole process, 2/50/250 instruments";   $PY -m bench.process --sizes 2,50,250 --duration 60 --warmup 15
echo "== 5. archive and Parquet vs gzip -6";        $PY -m bench.archive --minutes 60 --repeat 3
echo "== 6. Dagster sensor and compression ticks";  $PY -m bench.lake --instruments 2,20 --days 5
echo "== 6b. pipeline CPU per instrument-hour, depth 400, vs floor and capture"
                                                    $PY -m bench.hour_cost --depth 400 --capture 50
echo "== 7. event-loop stall at an hour rollover";  $PY -m bench.rollover_stall --instruments 250
echo "== 8. shipping: hour close to verified object"; $PY -m bench.ship_latency --instruments 8 --repeat 2
echo "== 9. the tape: bytes, process CPU, replay";  $PY -m bench.tape --duration 300 --repeat 3
                                                    $PY -m bench.process --sizes 50,250 --duration 60 --warmup 15 --tape both --rounds 2
