"""The per-worker statistics slot: one fixed byte layout, one writer, many readers.

Byte layout of a slot (all fields little-endian unsigned 64-bit words, native
alignment; ``W`` = 8 bytes)::

    offset (words)            field
    0                         MAGIC (0x706f6f6c73766331, "poolsvc1")
    1                         pid of the writer
    2                         heartbeat: monotonic microseconds of the last publish
    3                         generation: bumped by the writer when it (re)starts
    HEADER .. +N_COUNTERS     counters, in COUNTERS order (monotonic, never reset)
    .. +N_GAUGES              gauges, in GAUGES order (last published value)
    .. +histogram.BUCKETS     latency histogram: from the intended send time
    .. +histogram.BUCKETS     open loop only: latency from the actual send (uncorrected)

``SLOT_WORDS`` words in all.  The writer increments words in place; a reader
copies the slot (``bytes(view)``) and decodes it.  An aligned 8-byte store is a
single instruction on x86-64 and arm64, so a reader never sees a torn word; it
may see counter A updated and counter B not yet (a skew of one request), which
sums over slots tolerate.  Nothing here takes a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from workers import histogram
from workers.errors import ERROR_NAMES, PHASES
from workers.injection import KINDS

MAGIC: Final = 0x706F6F6C73766331
HEADER: Final = 4

EVICT_REASONS: Final = (
    "idle_timeout",  # idle longer than idle_timeout_ms
    "max_age",  # older than max_age_ms
    "validation",  # checkout probe found FIN/RST/unsolicited bytes
    "health_check",  # active health check failed
    "peer_closed",  # FIN/RST/bytes while idle, seen by the event loop
    "server_close",  # response said Connection: close (or HTTP/1.0)
    "error",  # a request on it failed
    "resized",  # the pool was made smaller at runtime
)

STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")

COUNTERS: Final[tuple[str, ...]] = (
    "requests.total",  # finished requests: ok + failed
    "requests.ok",  # a complete response arrived (any status)
    "requests.failed",
    "requests.sent",  # request bytes fully written (re-sends included)
    "requests.cancelled",  # issued, still waiting for a connection when the run stopped
    "requests.late",  # open loop: sent more than 1 ms after the intended time
    "requests.dropped",  # open loop: never issued (over max_outstanding); not in total
    *(f"responses.{c}" for c in STATUS_CLASSES),
    "connections.created",  # handshakes that completed with SO_ERROR == 0
    "connections.attempted",  # connect() calls
    "connections.reused",  # requests sent on a connection that had served before
    *(f"connections.evicted.{r}" for r in EVICT_REASONS),
    "connections.health_checks",
    "connections.shutdown",  # closed because the run ended (not an eviction)
    "retries.stale_reuse",  # re-sent once on a fresh connection, not a failure
    "bytes.in",
    "bytes.out",
    "latency.sum_us",
    "latency.max_us",
    "latency_uncorrected.max_us",  # open loop: from the actual send
    *(f"errors.{n}" for n in ERROR_NAMES),
    *(f"errors.phase.{p}" for p in PHASES),
    *(f"injected.{k}" for k in KINDS),  # faults that hit (next to the errno they caused)
)

GAUGES: Final = (
    "connections.active",  # reserved, busy or checking
    "connections.idle",
    "connections.connecting",
    "pool.waiting",  # requests queued for a connection
    "time.last_ok_us",  # monotonic us of the last good response
    "time.last_fail_us",  # monotonic us of the last failed request
    "time.started_us",  # monotonic us when the load started (after warm-up)
    "time.end_us",  # monotonic us when the duration bound ends (0 = none)
    "time.finished_us",  # monotonic us when the worker finished (0 = still running)
    "fds.baseline",  # descriptors before the first connection (stdio, epoll)
    "fds.expected",  # what the registry accounts for: baseline + connections + infrastructure
    "fds.now",  # descriptors the kernel counted at the last audit
    "audit.seq",  # the last audit request this worker answered
    "audit.leaked",  # leaked sockets found by that audit
    "audit.close_wait",  # CLOSE_WAIT sockets found by that audit
)

INDEX: Final = {name: HEADER + i for i, name in enumerate(COUNTERS)}
GAUGE_BASE: Final = HEADER + len(COUNTERS)
GAUGE_INDEX: Final = {name: GAUGE_BASE + i for i, name in enumerate(GAUGES)}
HIST_BASE: Final = GAUGE_BASE + len(GAUGES)
HIST2_BASE: Final = HIST_BASE + histogram.BUCKETS
SLOT_WORDS: Final = HIST2_BASE + histogram.BUCKETS
SLOT_BYTES: Final = SLOT_WORDS * 8

# Hot-path indices, resolved once at import.
REQ_TOTAL: Final = INDEX["requests.total"]
REQ_OK: Final = INDEX["requests.ok"]
REQ_FAILED: Final = INDEX["requests.failed"]
REQ_SENT: Final = INDEX["requests.sent"]
REQ_CANCELLED: Final = INDEX["requests.cancelled"]
REQ_LATE: Final = INDEX["requests.late"]
REQ_DROPPED: Final = INDEX["requests.dropped"]
LAT2_MAX: Final = INDEX["latency_uncorrected.max_us"]
RESP_BASE: Final = INDEX["responses.1xx"] - 1  # + status // 100
CONN_CREATED: Final = INDEX["connections.created"]
CONN_ATTEMPTED: Final = INDEX["connections.attempted"]
CONN_REUSED: Final = INDEX["connections.reused"]
HEALTH_CHECKS: Final = INDEX["connections.health_checks"]
SHUTDOWN: Final = INDEX["connections.shutdown"]
STALE_REUSE: Final = INDEX["retries.stale_reuse"]
BYTES_IN: Final = INDEX["bytes.in"]
BYTES_OUT: Final = INDEX["bytes.out"]
LAT_SUM: Final = INDEX["latency.sum_us"]
LAT_MAX: Final = INDEX["latency.max_us"]
EVICT: Final = {r: INDEX[f"connections.evicted.{r}"] for r in EVICT_REASONS}
ERROR: Final = {n: INDEX[f"errors.{n}"] for n in ERROR_NAMES}
PHASE: Final = {p: INDEX[f"errors.phase.{p}"] for p in PHASES}
INJECTED: Final = {k: INDEX[f"injected.{k}"] for k in KINDS}


def init_slot(words: memoryview, pid: int) -> None:
    """Claim ``words`` for writer ``pid``; keeps the counters (a restarted writer adds to them)."""
    words[0] = MAGIC
    words[1] = pid
    words[3] += 1


class Snapshot:
    """Decoded, summed copy of one or more slots; plain data, safe to keep."""

    __slots__ = ("counters", "gauges", "hist", "hist2")

    def __init__(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.gauges = dict.fromkeys(GAUGES, 0)
        self.hist = [0] * histogram.BUCKETS
        self.hist2 = [0] * histogram.BUCKETS

    @classmethod
    def of(cls, slots: Sequence[memoryview]) -> Snapshot:
        """Sum ``slots`` (each a 'Q' view of SLOT_WORDS words).  ``latency.max_us`` and
        the ``time.*`` gauges are maxed (``time.started_us``: the earliest non-zero)."""
        snap = cls()
        for words in slots:
            copy = words.tolist()  # one copy, then decode without touching shared memory
            for name in COUNTERS:
                value = copy[INDEX[name]]
                if name.endswith(".max_us"):
                    snap.counters[name] = max(snap.counters[name], value)
                else:
                    snap.counters[name] += value
            for name in GAUGES:
                value = copy[GAUGE_INDEX[name]]
                if name == "audit.seq":
                    continue  # per worker only: a sum means nothing
                if name == "time.started_us":  # the earliest start of any slot
                    old = snap.gauges[name]
                    snap.gauges[name] = min(old, value) if old and value else old or value
                elif name.startswith("time."):  # the latest event of any slot
                    snap.gauges[name] = max(snap.gauges[name], value)
                else:
                    snap.gauges[name] += value
            histogram.merge_into(snap.hist, copy[HIST_BASE : HIST_BASE + histogram.BUCKETS])
            histogram.merge_into(snap.hist2, copy[HIST2_BASE : HIST2_BASE + histogram.BUCKETS])
        return snap

    def errors(self) -> dict[str, int]:
        """Non-zero error counters by name."""
        return {n: v for n in ERROR_NAMES if (v := self.counters[f"errors.{n}"])}

    def latency(self) -> dict[str, int]:
        """Percentiles and max in microseconds (from the intended send time)."""
        return histogram.summary(self.hist, self.counters["latency.max_us"])

    def latency_uncorrected(self) -> dict[str, int] | None:
        """Open loop: the same from the actual send time; None for a closed loop."""
        if not any(self.hist2):
            return None
        return histogram.summary(self.hist2, self.counters["latency_uncorrected.max_us"])

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Snapshot requests={c['requests.total']} ok={c['requests.ok']} "
            f"failed={c['requests.failed']} created={c['connections.created']}>"
        )
