"""The version of poolsvc, one source: the package, the User-Agent, /metrics' build info."""

__version__ = "0.1.0"
