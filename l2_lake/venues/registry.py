"""The registry of venues, and the one this process collects (there is one venue today: OKX).

Adding a venue: its package beside `l2_lake/venues/okx/`, one line here, and its tests (README.md,
"Where to add things").
"""

from __future__ import annotations

from l2_lake.venues.okx import OKX
from l2_lake.venues.venue import Venue

VENUES: dict[str, Venue] = {OKX.name: OKX}
DEFAULT_VENUE: Venue = VENUES["okx"]
