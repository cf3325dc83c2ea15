"""The pipeline's lake steps in a loop, as one process the reconciliation soak kills at random
(`python -m collector_tests.soak_pipeline SKEW_HOURS REST_URL WORK_DIR LAKE_URL...`).

Each pass, over every lake URL, with the clock skewed by SKEW_HOURS, runs what the pipeline's assets
and jobs run there, through the same library calls (`l2_lake`; no Dagster in this process):
- the registration sensor's listing of every instrument's hours (`tree.hour_files`), snapshots and tape;
- `raw_archive` and `book_tape_archive`: every hour `compression_due` names, archived in a staged
  workspace (`ObjectTree.hour_workspace`) and published;
- `instrument_metadata`: the instruments refreshed from the simulator's REST in a files workspace;
- the retention job: `plan_deletions` then `delete_files`.
A step that fails (a store 500 or stall, a race with a shipper) is printed and the pass goes on,
as a failed run is retried by the next tick. One line per pass goes to stdout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from l2_lake.format import layout
from l2_lake.store.home import StoreError
from l2_lake.store.instrument_meta import fetch_swap_instruments
from l2_lake.store.s3 import S3Store, parse_lake_url
from l2_lake.store.tree import ObjectTree
from l2_lake.tiers.archive import archive_hour
from l2_lake.tiers.instruments import refresh_instruments
from l2_lake.tiers.retention import delete_files, plan_deletions
from l2_lake.tiers.selection import compression_due
from l2_lake.venues import rest
from l2_lake.venues.registry import DEFAULT_VENUE

COMPRESS_AFTER = timedelta(hours=6)
GRACE = timedelta(minutes=2)
RAW_RETENTION = timedelta(days=5)
STEPS = ((layout.RAW_PREFIX, (("records",), ("archive",))),
         (layout.TAPE_PREFIX, (("tape_records",), ("tape_archive",))))


def one_pass(tree: ObjectTree, now: datetime, listed: dict[str, dict]) -> dict[str, int]:
    done = {"hours_listed": 0, "archived": 0, "deleted": 0, "failed": 0}
    for prefix, needs in STEPS:
        for inst_id in tree.instruments(prefix):
            done["hours_listed"] += len(tree.hour_files(inst_id, prefix=prefix))
        for item in compression_due(tree, now, COMPRESS_AFTER, GRACE, now=now, prefix=prefix):
            try:
                with tree.hour_workspace(item.inst_id, item.hour, needs) as root:
                    status = archive_hour(root, item.inst_id, item.hour, now, GRACE, prefix=prefix).status
                done["archived"] += status == "archived"
            except (StoreError, OSError, ValueError) as exc:
                done["failed"] += 1
                print(f"step failed: {item.inst_id} {item.hour:%Y-%m-%dT%H} {prefix}: {exc}", flush=True)
    try:
        with tree.files_workspace(layout.META_PREFIX) as root:
            refresh_instruments(root, sorted(listed), listed, int(now.timestamp() * 1000))
        report = delete_files(tree, plan_deletions(tree, now, RAW_RETENTION, None), dry_run=False)
        done["deleted"] += len(report.removed)
    except (StoreError, OSError) as exc:
        done["failed"] += 1
        print(f"step failed: metadata or retention: {exc}", flush=True)
    return done


def main(argv: list[str]) -> None:
    skew = timedelta(hours=float(argv[0]))
    listed = asyncio.run(fetch_swap_instruments(rest.RestClient(DEFAULT_VENUE, argv[1], 5.0)))
    trees = [ObjectTree(S3Store(parse_lake_url(url)), Path(argv[2]) / str(i)) for i, url in enumerate(argv[3:])]
    while True:
        for tree in trees:
            now = datetime.now(UTC) + skew
            print(f"pass {tree.key} as of {now:%Y-%m-%dT%H:%M:%S}: {one_pass(tree, now, listed)}", flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
