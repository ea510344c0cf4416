"""The product's command lines: ``poolsvc`` and ``poolctl``."""
