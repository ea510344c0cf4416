"""Opt-in retries of idempotent requests, with exponential backoff and full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from poolsvc.library.exceptions import ClientError
from workers.net.httpwire import IDEMPOTENT

#: phases whose failures a retry may cure (the pool, the breaker and a bad request: no)
RETRY_PHASES: Final = frozenset({"connect", "tls", "write", "read"})


@dataclass(frozen=True, slots=True)
class Retry:
    """``total`` retries at most (0: none, the default), for ``methods`` only (the
    idempotent ones), after a failure in a phase of :data:`RETRY_PHASES` or a status
    in ``statuses``; before retry ``n`` the client sleeps ``uniform(0, min(cap, base *
    2**n))`` seconds (full jitter, as the service's reconnect backoff)."""

    total: int = 0
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    statuses: frozenset[int] = frozenset()
    methods: frozenset[str] = field(default=IDEMPOTENT)

    def __post_init__(self) -> None:
        if self.total < 0 or self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise ValueError("retries need total >= 0 and 0 < backoff_base <= backoff_cap")


def retry_after(retry: Retry, attempt: int, method: str, exc: ClientError | None,
                status: int | None, rng: random.Random) -> float | None:  # fmt: skip
    """Seconds to wait before the next try, or None: do not retry (pure)."""
    if attempt >= retry.total or method not in retry.methods:
        return None
    if exc is not None and exc.phase not in RETRY_PHASES:
        return None
    if exc is None and status not in retry.statuses:
        return None
    return rng.uniform(
        0.0, min(retry.backoff_cap, retry.backoff_base * float(1 << min(attempt, 30)))
    )
