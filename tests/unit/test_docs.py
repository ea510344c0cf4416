"""Docs that restate a fact of the code are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

from poolsvc import config
from workers.errors import ERROR_NAMES
from workers.stats import COUNTERS, EVICT_REASONS

ROOT = Path(__file__).parents[2]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_readme_config_table_lists_exactly_the_config_keys() -> None:
    table = _section((ROOT / "README.md").read_text(), "### Configuration file")
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            documented |= set(re.findall(r"`(\w+)`", row.split("|")[1]))
    assert documented == set(config.KEYS)


def test_readme_outcomes_are_the_ledgers() -> None:
    table = _section((ROOT / "README.md").read_text(), "### Every request accounted for")
    rows = set(re.findall(r"^\| `(requests\.\w+)` \|", table, re.M))
    assert rows == {f"requests.{k}" for k in ("ok", "failed", "unsent", "abandoned", "lost")}
    assert rows < set(COUNTERS)


def test_architecture_lists_every_error_name_and_eviction_reason() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    errors = _section(doc, "### Failure names")
    assert set(re.findall(r"^\| `(\w+)` \|", errors, re.M)) == set(ERROR_NAMES)
    evictions = _section(doc, "### Eviction reasons")
    assert set(re.findall(r"^\| `(\w+)` \|", evictions, re.M)) == set(EVICT_REASONS)
