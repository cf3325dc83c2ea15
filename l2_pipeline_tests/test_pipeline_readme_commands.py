"""The Dagster command lines of docs/PIPELINE.md, run as written on a new instance (a fresh
DAGSTER_HOME; on PostgreSQL runs of the suite, holding the dagster.yaml of a new database) over a
planted lake: each exits 0 and does what docs/PIPELINE.md says.

The commands are read from docs/PIPELINE.md's block that follows the marker
`<!-- commands tested by l2_pipeline_tests/test_pipeline_readme_commands.py -->`, so the page
cannot drift from what is tested.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetCheckKey, DagsterInstance

from l2_pipeline.keys import CURATED_PARQUET, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, crossed_record, make_records, ms, write_hour

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "PIPELINE.md"
MARKER = "<!-- commands tested by l2_pipeline_tests/test_pipeline_readme_commands.py -->"


def documented_commands() -> list[str]:
    """The command lines of docs/PIPELINE.md's tested block (comments and blank lines dropped)."""
    text = PAGE.read_text()
    assert MARKER in text, "docs/PIPELINE.md lost its tested command block"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None
    lines = [line.split("  # ")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def ran(tmp_path_factory, dagster_instances) -> Iterator[tuple[Path, subprocess.CompletedProcess]]:
    """Every command of docs/PIPELINE.md's block, in order, on a new instance over a lake with one
    crossed-book hour."""
    root = tmp_path_factory.mktemp("pipeline_commands")
    lake, home = root / "lake", root / "dagster_home"
    records = make_records(BTC, BASE_HOUR, count=120)
    records[7] = crossed_record(BTC, ms(BASE_HOUR) + 7 * 2000 + 1000, seq=7)
    write_hour(lake, BTC, BASE_HOUR, records)
    env = {**os.environ, "L2_DATA_DIR": str(lake), "L2_INSTRUMENTS": BTC, "HOME": str(root)}
    env.pop("DAGSTER_HOME", None)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    commands = documented_commands()
    assert len(commands) >= 5
    # one shell, as a user types them (the first exports DAGSTER_HOME); -e: the first failure stops it,
    # -x: the log shows which. docs/PIPELINE.md's paths are relative to the repository root; its
    # DAGSTER_HOME goes to the temp dir.
    script = "set -ex\n" + "\n".join(commands).replace("$PWD/dagster_home", str(home))
    with dagster_instances.home(home):  # docs/PIPELINE.md's `touch` keeps a dagster.yaml it holds
        result = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        yield home, result


def test_every_documented_command_succeeds_on_a_new_instance(ran):
    _, result = ran
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-6000:]}"
    assert "No dagster instance configuration file" not in result.stderr
    assert "DagsterUnknownPartitionError" not in result.stderr
    assert "Validation successful for code location l2_pipeline.definitions" in result.stdout + result.stderr
    assert "raw_hours_sensor" in result.stdout + result.stderr


def test_documented_commands_did_what_the_page_says(ran):
    home, _ = ran
    key = str(partition_key(BTC, BASE_HOUR))
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(RAW_HOUR) == {key}
        assert instance.get_materialized_partitions(CURATED_PARQUET) == {key}
        crossed = instance.event_log_storage.get_asset_check_partition_info(
            [AssetCheckKey(RAW_HOUR, "no_crossed_books")], partition_keys=[key])
        (info,) = crossed
        assert info.latest_execution_status.value == "FAILED" and info.is_current
