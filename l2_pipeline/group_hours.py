"""Group-hours (`L2_INSTRUMENT_GROUPS`, `l2_pipeline.partitions`): which instruments a partition of a
group stands for, and what one materialization records of all of them.

A group-hour's materialization holds, for each asset:
- `instruments` and `instrument_ids`: the members done (those with a records or archive file of the hour);
- the group's figures: counts summed (`records`, `gaps`, `bytes`, …), `*_pct` as the lowest member's
  (`coverage_pct` is the group's worst coverage), `first_ts` / `last_ts` as the span, `quality` as the
  union of the checks that failed with the instruments they failed on (`failed_instruments`);
- `members`: a Markdown table of each member's main figures (quality, records, coverage, gaps, …);
- `by_instrument`: every member's own metadata as JSON, exactly what its own partition would have
  recorded (`member_metadata` reads it back: `lake_health` draws one cell per instrument-hour from it
  and `raw_hours_sensor` compares each member's file fingerprint);
- each member's figure (Markdown image) under `figure <instId>`, when figures are on.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import MarkdownMetadataValue, MetadataValue

from l2_lake.format.hours import iso
from l2_lake.quality.verdicts import FAILED_PREFIX, failed_in_summary
from l2_lake.store.tree import LakeTree
from l2_pipeline.partitions import group_members, parse_group_key

BY_INSTRUMENT = "by_instrument"
DATA_KINDS = frozenset({"records", "archive"})
_SPAN = {"first_ts": min, "last_ts": max}
_SAME = frozenset({"cadence_ms", "depth"})  # a setting every member shares, not a count
# the columns of the `members` table a person reads in the UI, those any member has (all are in `by_instrument`)
TABLE_COLUMNS = ("status", "quality", "records", "rows", "lines", "coverage_pct", "gaps", "checksum_failures",
                 "disagreements", "messages")


def is_group(column: str) -> bool:
    """Whether a key of the instrument dimension is a group's (not an instId)."""
    return parse_group_key(column) is not None


HasHour = Callable[[str, datetime], bool]  # (instId, hour) → whether it has a file of the hour to work on


def lake_has_hour(tree: LakeTree, prefix: Path) -> HasHour:
    """Whether the lake holds a records or archive file of an instrument-hour of the dataset `prefix`."""
    return lambda inst_id, hour: bool(DATA_KINDS & tree.hour_kinds(inst_id, hour, prefix))


def members_with_data(column: str, hour: datetime, candidates: Iterable[str], has_hour: HasHour) -> list[str]:
    """The instruments of the group `column` among `candidates` that have a file of `hour` (`has_hour`)."""
    return [inst_id for inst_id in group_members(column, candidates) if has_hour(inst_id, hour)]


def no_member_data(column: str, hour: datetime, candidates: Iterable[str], where: str) -> str:
    """Why a group-hour without any member's file (in `where`) cannot be done, and what to do."""
    known = group_members(column, candidates)
    return (f"no data: none of the {len(known)} known instrument(s) of {column} "
            f"({', '.join(known) or 'none yet'}) has a file of {iso(hour)} in {where}. Nothing was collected "
            "for this hour, or retention deleted it. Leave the hour out of the backfill.")


def plain(value: Any) -> Any:
    """A metadata value as plain JSON data (a `MetadataValue`'s own value)."""
    return value.value if isinstance(value, MetadataValue) else value


def _aggregate(name: str, values: list[Any]) -> Any:
    """The group's figure `name` of its members' `values` (None: none that means anything for a group)."""
    if name == "quality":
        failed = [check for v in values for check in failed_in_summary(str(v))]
        return f"{FAILED_PREFIX}{', '.join(dict.fromkeys(failed))}" if failed else values[0]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return None
    if name in _SPAN:
        return _SPAN[name](values)
    if name in _SAME:
        return values[0] if len(set(values)) == 1 else None
    if name.endswith("_pct"):
        return min(values)
    if all(isinstance(v, int) for v in values) or name == "seconds":
        return sum(values)
    return None


def group_metadata(by_member: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One group-hour materialization's metadata of its members' (instId → that instrument-hour's metadata)."""
    members = sorted(by_member)
    figures = {f"figure {inst}": value for inst in members for value in by_member[inst].values()
               if isinstance(value, MarkdownMetadataValue)}
    table = {inst: {name: plain(value) for name, value in by_member[inst].items()
                    if not isinstance(value, MarkdownMetadataValue)} for inst in members}
    names = dict.fromkeys(name for inst in members for name in table[inst])
    figures_of_group: dict[str, Any] = {}
    for name in names:
        values = [table[inst][name] for inst in members if name in table[inst]]
        value = _aggregate(name, values) if len(values) == len(members) else None
        if value is not None:
            figures_of_group[name] = value
    failing = [inst for inst in members if str(table[inst].get("quality", "")).startswith(FAILED_PREFIX)]
    if "quality" in figures_of_group:
        figures_of_group["failed_instruments"] = ", ".join(failing)
    return {"instruments": len(members), "instrument_ids": ", ".join(members), **figures_of_group,
            "members": members_table(table), BY_INSTRUMENT: MetadataValue.json(table), **figures}


def members_table(table: Mapping[str, Mapping[str, Any]], names: Sequence[str] = TABLE_COLUMNS) -> MetadataValue:
    """A Markdown table of the members' main figures (those of `names` any member has), one row per instrument."""
    columns = [c for c in names if any(c in row for row in table.values())]
    lines = ["| instId | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {inst} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for inst, row in table.items()]
    return MetadataValue.md("\n".join(lines))


def recorded_members(metadata: Mapping[str, Any], column: str) -> dict[str, dict[str, Any]]:
    """instId → its own metadata, as plain values, of each instrument-hour a materialization's `metadata`
    records for a partition whose instrument key is `column`: a group's `by_instrument`, or the
    instrument-hour's own metadata."""
    if BY_INSTRUMENT in metadata:
        return {inst_id: dict(member) for inst_id, member in plain(metadata[BY_INSTRUMENT]).items()}
    return {column: {name: plain(value) for name, value in metadata.items()}}


def member_metadata(metadata: Mapping[str, Any], inst_id: str) -> dict[str, Any] | None:
    """An instrument's own metadata, as plain values, in a materialization's `metadata` (of its own
    partition, or of its group's: None if the group-hour did not include it)."""
    return recorded_members(metadata, inst_id).get(inst_id)
