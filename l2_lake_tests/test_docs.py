"""The documentation stays usable: README.md is the newcomer's page (at most 200 lines, naming the two
commands), every relative link in README.md and docs/*.md points to a file that exists, and no page
points outside the repository's own reference data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target); a target ends at whitespace or ")" (an optional "title" follows)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def relative_links(page: Path) -> list[str]:
    """The page's link targets that name a file of the repository (no URL, no bare #anchor)."""
    text = CODE.sub("", page.read_text())
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into a page under docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_points_to_an_existing_file(page: Path):
    broken = []
    for target in relative_links(page):
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: links to missing files: {broken}"


def test_the_link_check_sees_links():
    assert len(relative_links(README)) >= 10
    assert "docs/CONTRACT.md" in relative_links(README)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_no_page_points_outside_the_repository(page: Path):
    text = page.read_text()
    for outside in ("../shared/", "shared/okx_reference"):
        assert outside not in text, f"{page.relative_to(REPO)} mentions {outside}"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "bash scripts/demo.sh" in text
    assert "bash scripts/test.sh" in text
