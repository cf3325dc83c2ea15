"""The registry of venues, and the one this process collects (there is one venue today: OKX).

Adding a venue: its package beside `collector/okx/`, one line here, and its tests (README,
"Adding a venue").
"""

from __future__ import annotations

from collector.okx import OKX
from collector.venue import Venue

VENUES: dict[str, Venue] = {OKX.name: OKX}
DEFAULT_VENUE: Venue = VENUES["okx"]
