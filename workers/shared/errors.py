"""Error classes: every failure is named, given a phase and a culprit.

A request can fail in one of eight phases, in the order a request meets them:

    pool      no connection could be had (exhausted, wait timed out, cancelled)
    breaker   refused by the circuit breaker before any I/O
    connect   the TCP handshake failed or timed out
    tls       the TLS handshake failed or timed out (tls_*)
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
import re
import ssl
from typing import Final

PHASES: Final = ("pool", "breaker", "connect", "write", "read", "status", "injected", "tls")

#: The alerts a TLS peer may send that end a handshake or a connection (RFC 8446
#: section 6; protocol_version is counted as tls_protocol_version, close_notify is
#: an orderly close), each counted as ``tls_alert_<name>``.
TLS_ALERTS: Final = (
    "unexpected_message",
    "bad_record_mac",
    "record_overflow",
    "handshake_failure",
    "bad_certificate",
    "unsupported_certificate",
    "certificate_revoked",
    "certificate_expired",
    "certificate_unknown",
    "illegal_parameter",
    "unknown_ca",
    "access_denied",
    "decode_error",
    "decrypt_error",
    "insufficient_security",
    "internal_error",
    "inappropriate_fallback",
    "user_cancelled",
    "missing_extension",
    "unsupported_extension",
    "unrecognized_name",
    "bad_certificate_status_response",
    "unknown_psk_identity",
    "certificate_required",
    "no_application_protocol",
)

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
    # TLS (the handshake's phase is tls; a TLS error while reading is a read failure)
    "tls_cert_verify_failed": "remote",  # untrusted CA, expired, wrong name: see pre-flight
    "tls_handshake_timeout": "remote",
    "tls_protocol_version": "remote",  # no version both sides allow (or not TLS at all)
    "tls_eof": "remote",  # the peer closed in the middle of the handshake
    "tls_error": "remote",  # any other TLS failure
    **{f"tls_alert_{alert}": "remote" for alert in TLS_ALERTS},
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
    """Counter name of an OSError raised by a socket call (a TLS one: :func:`tls_name`)."""
    if isinstance(exc, ssl.SSLError):
        return tls_name(exc)
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return "ETIMEDOUT"
    return errno_name(exc.errno) if exc.errno is not None else "EOTHER"


_ALERT: Final = re.compile(r"(?:SSLV3|TLSV1|TLSV13)_(?:ALERT_)?([A-Z_]+)")
_VERSION: Final = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_VERSION_NUMBER",  # a plain-HTTP answer to our ClientHello
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "TLSV1_ALERT_PROTOCOL_VERSION",
    }
)


def tls_name(exc: ssl.SSLError) -> str:
    """Counter name of a TLS failure: a verification failure, a version mismatch, an
    EOF, an alert by its name, else ``tls_error``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_cert_verify_failed"
    if isinstance(exc, ssl.SSLEOFError):
        return "tls_eof"
    reason = str(getattr(exc, "reason", "") or "")
    if reason in _VERSION:
        return "tls_protocol_version"
    match = _ALERT.fullmatch(reason)
    if match:
        name = f"tls_alert_{match.group(1).lower()}"
        return name if name in ERROR_CLASSES else "tls_error"
    return "tls_error"


def tls_detail(exc: ssl.SSLError) -> str:
    """What went wrong, in a few words (the verification message when there is one)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    return str(getattr(exc, "reason", "") or exc).lower().replace("_", " ")


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
