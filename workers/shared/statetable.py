"""Lifecycle tables: every state named, every legal move a cell, every other move refused.

A lifecycle (a connection's, a client's) is a dict ``state -> {event: next state}``.
:func:`columns` turns it around into one column per event, ``event -> {state: next
state}``, for the request path: ``obj.state = ON["send"][obj.state]`` is one dict
lookup, not a method call, and a cell the table lacks raises
:class:`InvalidTransition` exactly as :func:`fire` does. States are plain strings,
not Enum members: they are dict keys on the hot path, and a str caches its hash
where ``Enum.__hash__`` is a Python call.
"""

from __future__ import annotations

from collections.abc import Mapping


class InvalidTransition(RuntimeError):
    """A move that the state table does not allow: a bug in the caller."""


Table = Mapping[str, Mapping[str, str]]


class Moves(dict[str, str]):
    """One event's column of a table: state -> next state; refuses a missing move."""

    def __init__(self, table: Table, event: str) -> None:
        super().__init__({st: row[event] for st, row in table.items() if event in row})
        self.event = event

    def __missing__(self, state: str) -> str:
        raise InvalidTransition(f"no transition from {state} on {self.event!r}")


def events(table: Table) -> list[str]:
    """Every event of ``table``, sorted."""
    return sorted({event for row in table.values() for event in row})


def columns(table: Table) -> dict[str, Moves]:
    """``table`` by event: ``columns(t)[event][state]`` is the move ``fire`` makes."""
    return {event: Moves(table, event) for event in events(table)}


def fire(table: Table, state: str, event: str, owner: object) -> str:
    """The state ``event`` moves ``state`` to; ``owner`` names the object in the error."""
    try:
        return table[state][event]
    except KeyError:
        raise InvalidTransition(f"{owner!r}: no transition on {event!r}") from None
