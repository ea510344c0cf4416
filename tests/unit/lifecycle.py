"""Shared checks for lifecycle tables (connection, client, worker slot).

Each table is walked cell by cell against a hand-written expectation: a legal
move lands where expected, a missing one raises ``InvalidTransition`` and leaves
the state alone; the request path's columns (``ON``) make the same moves; and the
table in docs/architecture.md is the code's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from workers.shared import statetable as table

ARCHITECTURE = Path(__file__).parents[2] / "docs" / "architecture.md"


class Machine(Protocol):
    state: str

    def fire(self, event: str) -> str: ...


def check_cell(obj: Machine, state: str, event: str, expected: str | None) -> None:
    """Fire ``event`` on ``obj`` put in ``state``: it lands on ``expected`` (None: refused)."""
    obj.state = state
    if expected is None:
        with pytest.raises(table.InvalidTransition, match=f"no transition on '{event}'"):
            obj.fire(event)
        assert obj.state == state
    else:
        assert obj.fire(event) == expected == obj.state


def check_column(on: Mapping[str, Any], state: str, event: str, expected: str | None) -> None:
    """``on[event][state]`` makes the same move as ``fire`` (refuses the same ones)."""
    if expected is None:
        with pytest.raises(table.InvalidTransition, match=f"from {state} on '{event}'"):
            on[event][state]
    else:
        assert on[event][state] == expected


def documented(heading: str, states: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """The table under ``heading`` in docs/architecture.md, as ``state -> {event: to}``."""
    section = ARCHITECTURE.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    out = {}
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if cells[0] in states:
            out[cells[0]] = {e: to for e, to in zip(header[1:], cells[1:], strict=True) if to}
    return out


def markdown(transitions: Mapping[str, Mapping[str, str]], events: list[str]) -> str:
    """A table in the docs' form (to paste into docs/architecture.md when it changes)."""
    rows = ["| state | " + " | ".join(events) + " |", "|---" * (len(events) + 1) + "|"]
    for state, row in transitions.items():
        rows.append("| " + " | ".join([state, *(row.get(e, "") for e in events)]) + " |")
    return "\n".join(rows)
