"""`plant_damaged_lake` (used by scripts/ui_screenshots.py): each damaged hour fails exactly the
check it was planted for, every other planted hour passes all six, the open hour is left open."""

from datetime import UTC, datetime
from pathlib import Path

from l2_lake.format import layout
from l2_lake.quality.hour_stats import compute_hour_stats
from l2_lake.quality.verdicts import HOUR_CHECKS, evaluate_hour
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.damaged_lake import INSTRUMENTS, MIN_HOURS, plant_damaged_lake, planted_hours

NOW = datetime(2026, 11, 25, 21, 30, 7, tzinfo=UTC)


def test_each_damaged_hour_fails_exactly_its_check(tmp_path: Path) -> None:
    damaged = plant_damaged_lake(tmp_path, NOW, hours=MIN_HOURS)
    assert sorted(damaged) == sorted(HOUR_CHECKS)
    assert len(set(damaged.values())) == len(HOUR_CHECKS)
    failing_at = {key: check for check, key in damaged.items()}
    hours = planted_hours(NOW, MIN_HOURS)
    assert hours[-1] == datetime(2026, 11, 25, 20, tzinfo=UTC) and len(hours) == MIN_HOURS
    for hour in hours:
        for inst_id in INSTRUMENTS:
            stats = compute_hour_stats(tmp_path, inst_id, hour, 2.0)
            failed = [v.check_name for v in evaluate_hour(stats, 95.0) if not v.passed]
            expected = failing_at.get(str(partition_key(inst_id, hour)))
            assert failed == ([expected] if expected else []), (inst_id, hour, failed)
            if expected is None:
                assert stats.records >= 0.99 * 1800
    open_hour = datetime(2026, 11, 25, 21, tzinfo=UTC)
    for inst_id in INSTRUMENTS:
        stats = compute_hour_stats(tmp_path, inst_id, open_hour, 2.0)
        assert stats.records == 904  # at :00:01, :00:03, …, :30:07 (NOW)
        assert stats.scan.last_ts_ms <= NOW.timestamp() * 1000
    assert layout.records_path(tmp_path, INSTRUMENTS[0], hours[0]).is_file()
