"""Error classes: every failure is named, given a phase and a culprit.

A request can fail in one of seven phases, in the order a request meets them:

    pool      no connection could be had (exhausted, wait timed out, cancelled)
    breaker   refused by the circuit breaker before any I/O
    connect   the TCP handshake failed or timed out
    write     sending the request failed
    read      receiving the response failed, timed out, or was malformed
    status    a complete response whose status is not a success (4xx, 5xx, ...)
    injected  a fault injected on purpose (counted next to the errno it caused)

A request that fails before its last byte is written was never *sent*: it is
counted under ``unsent.<NAME>``; one that fails after is ``failed.<NAME>``. A
connect that carried no request (a warm-pool refill) and failed is a connection
error, ``connect_errors.<NAME>``: no request was lost.

and is blamed on one side: ``local`` (our process or host: EMFILE, EADDRNOTAVAIL,
an exhausted pool) or ``remote`` (the target or the path to it).

Each failure has one *name*: the errno name when the kernel gave one
(``ECONNRESET``), otherwise the phase-specific class (``read_timeout``).  The names
are a closed table so that counters can live in a fixed shared-memory layout; an
errno that is not in the table is counted as ``EOTHER``.  Counters, reports and the
control socket all use these same names (wrk's ``errors`` struct, typed).
"""

from __future__ import annotations

import errno
from typing import Final

PHASES: Final = ("pool", "breaker", "connect", "write", "read", "status", "injected")

#: name -> culprit.  The order is the counter order in shared memory: append only.
ERROR_CLASSES: Final[dict[str, str]] = {
    # kernel errnos
    "ECONNREFUSED": "remote",
    "ECONNRESET": "remote",
    "EPIPE": "remote",
    "ETIMEDOUT": "remote",
    "EHOSTUNREACH": "remote",
    "ENETUNREACH": "remote",
    "ECONNABORTED": "remote",
    "EINVAL": "remote",  # e.g. a connect over a blackhole route
    "EADDRNOTAVAIL": "local",
    "EADDRINUSE": "local",
    "EMFILE": "local",
    "ENFILE": "local",
    "ENOBUFS": "local",
    "ENOMEM": "local",
    "EOTHER": "remote",
    # classes without an errno
    "connect_timeout": "remote",
    "read_timeout": "remote",
    "early_eof": "remote",  # the peer closed before the response was complete
    "protocol_error": "remote",  # the response did not parse as HTTP/1.x
    "pool_exhausted": "local",  # exhaustion policy 'fail'
    "pool_timeout": "local",  # exhaustion policy 'wait', and the wait timed out
    "breaker_open": "local",
    "unexpected_upgrade": "remote",  # 101 Switching Protocols: not HTTP/1.1 any more
    "header_too_large": "remote",  # the header block passed max_header_bytes
    "status_4xx": "local",  # the target refused the request we sent
    "status_5xx": "remote",
    "status_other": "remote",  # a 1xx-3xx final status that success_statuses excludes
    "cancelled": "local",  # waiting for a connection when the run stopped
}

ERROR_NAMES: Final = tuple(ERROR_CLASSES)
ERROR_INDEX: Final = {name: i for i, name in enumerate(ERROR_NAMES)}


def errno_name(code: int) -> str:
    """Map an errno value to its counter name (``EOTHER`` when not in the table)."""
    name = errno.errorcode.get(code, "EOTHER")
    if name == "EWOULDBLOCK":  # same value as EAGAIN on Linux; neither is a failure we count
        return "EOTHER"
    return name if name in ERROR_CLASSES else "EOTHER"


def oserror_name(exc: OSError) -> str:
    """Counter name of an OSError raised by a socket call."""
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return "ETIMEDOUT"
    return errno_name(exc.errno) if exc.errno is not None else "EOTHER"


class PoolSvcError(Exception):
    """Root of the errors poolsvc raises to its callers (not used on the hot path).

    ``name`` is the counter name, ``phase`` one of :data:`PHASES`.
    """

    phase = "pool"

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.detail = detail

    @property
    def culprit(self) -> str:
        return ERROR_CLASSES.get(self.name, "remote")

    def __reduce__(self) -> tuple[type[PoolSvcError], tuple[str, str]]:
        # Plain fields only, so the error survives a trip between processes.
        return (type(self), (self.name, self.detail))


class ConnectError(PoolSvcError):
    """A target could not be connected to at all (``poolsvc run`` exits 4)."""

    phase = "connect"


class ConfigError(ValueError):
    """Invalid configuration or arguments; the CLI prints it on one line and exits 2."""
