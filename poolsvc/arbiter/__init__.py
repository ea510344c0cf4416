"""The supervisor and what it keeps: the fleet of worker slots and their lifecycle,
signals, the breaker desk, FD audits, the read model's readings, a run from start to
report (``poolsvc run``) and its live progress.
"""
