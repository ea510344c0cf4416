"""Response headers: a case-insensitive multi-dict in the order the server sent them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import overload


class Headers(Mapping[str, str]):
    """Header fields as received: ``h["content-type"]`` (any letter case) is the value,
    several values of one name joined by ``", "`` (RFC 9110 5.3); :meth:`get_list`
    gives them apart (``Set-Cookie`` must be read that way); :meth:`multi_items`
    every (name, value) pair in order, names as the server spelled them."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = items if items is not None else []
        self._index: dict[str, list[str]] | None = None  # built on first lookup

    def _by_name(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._items:
                index.setdefault(name.lower(), []).append(value)
            self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        values = self._by_name().get(name.lower())
        if values is None:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    @overload
    def get_list(self, name: str) -> list[str]: ...
    @overload
    def get_list(self, name: str, default: list[str]) -> list[str]: ...

    def get_list(self, name: str, default: list[str] | None = None) -> list[str]:
        """Every value of ``name``, in order ([] or ``default`` when absent)."""
        values = self._by_name().get(name.lower())
        return list(values) if values is not None else (default if default is not None else [])

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name()

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name())

    def __len__(self) -> int:
        return len(self._by_name())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._by_name() == other._by_name()
        if isinstance(other, Mapping):
            return {k: self[k] for k in self} == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
