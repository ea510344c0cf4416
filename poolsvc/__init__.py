"""poolsvc: pre-fork HTTP/1.1 connection-pool and load-generation service."""

__version__ = "0.1.0"
