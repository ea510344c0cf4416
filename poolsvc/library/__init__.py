"""The library face of poolsvc: ``Client`` and what it raises and returns (docs/library.md)."""
