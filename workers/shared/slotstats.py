"""The per-worker statistics slot: one fixed byte layout, one writer, many readers.

Byte layout of a slot (all fields little-endian unsigned 64-bit words, native
alignment; ``W`` = 8 bytes)::

    offset (words)            field
    0                         MAGIC (0x706f6f6c73766331, "poolsvc1")
    1                         pid of the writer
    2                         heartbeat: monotonic microseconds of the last publish
    3                         generation: bumped by the writer when it (re)starts
    HEADER .. +N_COUNTERS     counters, in COUNTERS order (monotonic, never reset)
    .. +STATUS_WORDS          one counter per final status code (monotonic)
    .. +N_GAUGES              gauges, in GAUGES order (last published value)
    .. +histogram.BUCKETS     latency histogram: from the intended send time
    .. +histogram.BUCKETS     open loop only: latency from the actual send (uncorrected)
    .. +histogram.BUCKETS     TCP connect time (connect() to SO_ERROR == 0)
    .. +histogram.BUCKETS     TLS handshake time, full handshakes
    .. +histogram.BUCKETS     TLS handshake time, resumed sessions
    .. +histogram.BUCKETS     failure time: from a failed request's due time to its failure

``SLOT_WORDS`` words in all.  The writer increments words in place; a reader
copies the slot (``bytes(view)``) and decodes it.  An aligned 8-byte store is a
single instruction on x86-64 and arm64, so a reader never sees a torn word; it
may see counter A updated and counter B not yet (a skew of one request), which
sums over slots tolerate.  Nothing here takes a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, count
from operator import add
from typing import Final

from workers.shared import histogram
from workers.shared.catalog import EVICT_REASONS as EVICT_REASONS  # (its home)
from workers.shared.catalog import ROWS
from workers.shared.errors import ERROR_NAMES, PHASES
from workers.shared.injection import KINDS

MAGIC: Final = 0x706F6F6C73766331
HEADER: Final = 4
WRITER_PID, HEARTBEAT, GENERATION = 1, 2, 3  # the header words after MAGIC

STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
STATUS_WORDS: Final = 600  # one counter per final status code, indexed by the code (0-99 unused)

#: Every request the load issues ends in exactly one outcome (``poolsvc.metrics.ledger``):
#: sent = ok + failed + lost + abandoned; every outcome together is requests.total.
#: The counters, in layout order, are the metric catalog's rows (workers.shared.catalog:
#: each counter's meaning and its Prometheus sample are there).
COUNTERS: Final[tuple[str, ...]] = tuple(row.name for row in ROWS)

GAUGES: Final = (
    "connections.active",  # reserved, busy or checking
    "connections.idle",
    "connections.connecting",
    "pool.waiting",  # requests queued for a connection
    "time.last_ok_us",  # monotonic us of the last good response
    "time.last_fail_us",  # monotonic us of the last failed request
    "time.started_us",  # monotonic us when the measured load started (after any warm-up)
    "time.warmup_us",  # monotonic us when the warm-up requests began (0: no warm-up)
    "time.ready_us",  # monotonic us when it was ready to send (after --start-at's wait)
    "time.end_us",  # monotonic us when the duration bound ends (0 = none)
    "time.issue_end_us",  # monotonic us when this worker stopped issuing (0 = still issuing)
    "time.finished_us",  # monotonic us when the worker finished (0 = still running)
    "load.busy_us",  # of the measured load, the time the loop worked (not waiting for events)
    "requests.sending",  # 1 while sends that complete requests are under way (the ledger)
    "fds.baseline",  # descriptors before the first connection (stdio, epoll)
    "fds.expected",  # what the registry accounts for: baseline + connections + infrastructure
    "fds.now",  # descriptors the kernel counted at the last audit
    "audit.seq",  # the last audit request this worker answered
    "audit.leaked",  # leaked sockets found by that audit
    "audit.close_wait",  # CLOSE_WAIT sockets found by that audit
)

INDEX: Final = {name: HEADER + i for i, name in enumerate(COUNTERS)}
STATUS_BASE: Final = HEADER + len(COUNTERS)  # + the status code
GAUGE_BASE: Final = STATUS_BASE + STATUS_WORDS
GAUGE_INDEX: Final = {name: GAUGE_BASE + i for i, name in enumerate(GAUGES)}
HIST_BASE: Final = GAUGE_BASE + len(GAUGES)
HIST2_BASE: Final = HIST_BASE + histogram.BUCKETS
CONNECT_BASE: Final = HIST2_BASE + histogram.BUCKETS
TLS_FULL_BASE: Final = CONNECT_BASE + histogram.BUCKETS
TLS_RESUMED_BASE: Final = TLS_FULL_BASE + histogram.BUCKETS
FAILURE_BASE: Final = TLS_RESUMED_BASE + histogram.BUCKETS
SLOT_WORDS: Final = FAILURE_BASE + histogram.BUCKETS
SLOT_BYTES: Final = SLOT_WORDS * 8

# Hot-path indices, resolved once at import.
REQ_SENT: Final = INDEX["requests.sent"]
REQ_OK: Final = INDEX["requests.ok"]
REQ_FAILED: Final = INDEX["requests.failed"]
REQ_UNSENT: Final = INDEX["requests.unsent"]
REQ_ABANDONED: Final = INDEX["requests.abandoned"]
REQ_LATE: Final = INDEX["requests.late"]
LAG_MAX: Final = INDEX["send_lag.max_us"]
REQ_DROPPED: Final = INDEX["requests.dropped"]
SENDING_FLAG: Final = GAUGE_INDEX["requests.sending"]
INTERIM: Final = INDEX["responses.interim"]
LAT2_MAX: Final = INDEX["latency_uncorrected.max_us"]
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
FAILED: Final = {n: INDEX[f"failed.{n}"] for n in ERROR_NAMES}
UNSENT: Final = {n: INDEX[f"unsent.{n}"] for n in ERROR_NAMES}
CONNECT_ERROR: Final = {n: INDEX[f"connect_errors.{n}"] for n in ERROR_NAMES}
PHASE: Final = {p: INDEX[f"errors.phase.{p}"] for p in PHASES}
INJECTED: Final = {k: INDEX[f"injected.{k}"] for k in KINDS}
CONNECT_MAX: Final = INDEX["connect.max_us"]
TLS_FULL: Final = INDEX["tls.handshakes.full"]
TLS_RESUMED: Final = INDEX["tls.handshakes.resumed"]
TLS_OFFERED: Final = INDEX["tls.sessions.offered"]
TLS_FULL_MAX: Final = INDEX["tls.full.max_us"]
TLS_RESUMED_MAX: Final = INDEX["tls.resumed.max_us"]
CONNECT_SUM: Final = INDEX["connect.sum_us"]
TLS_FULL_SUM: Final = INDEX["tls.full.sum_us"]
TLS_RESUMED_SUM: Final = INDEX["tls.resumed.sum_us"]
FAILURE_MAX: Final = INDEX["failure_time.max_us"]
FAILURE_SUM: Final = INDEX["failure_time.sum_us"]
#: merged with max, not summed
MAXED: Final = frozenset(
    {LAT_MAX, LAT2_MAX, LAG_MAX, CONNECT_MAX, TLS_FULL_MAX, TLS_RESUMED_MAX, FAILURE_MAX}
)
_MAXED_AT: Final = tuple(sorted(at - HEADER for at in MAXED))  # their places among COUNTERS
#: the histograms after the two of the request latency: name -> (base, max, sum counters)
TIMINGS: Final = {
    "connect": (CONNECT_BASE, "connect.max_us", "connect.sum_us"),
    "tls_full": (TLS_FULL_BASE, "tls.full.max_us", "tls.full.sum_us"),
    "tls_resumed": (TLS_RESUMED_BASE, "tls.resumed.max_us", "tls.resumed.sum_us"),
    "failure_time": (FAILURE_BASE, "failure_time.max_us", "failure_time.sum_us"),
}
#: where each of a snapshot's histograms starts: the two of the latency, then TIMINGS
_HIST_BASES: Final = (HIST_BASE, HIST2_BASE, *(base for base, _, _ in TIMINGS.values()))

#: Figures derived from the stored counters when a snapshot is decoded (kept for the
#: report's stable names): see :meth:`Snapshot.derive`.
DERIVED: Final = (
    "requests.total",  # ok + failed + unsent + abandoned + lost: every outcome
    "requests.cancelled",  # = unsent.cancelled
    *(f"responses.{c}" for c in STATUS_CLASSES),
    *(f"errors.{n}" for n in ERROR_NAMES),  # failed + unsent, by name
)


def init_slot(words: memoryview, pid: int) -> None:
    """Claim ``words`` for writer ``pid``; keeps the counters (a restarted writer adds to them)."""
    words[0] = MAGIC
    words[WRITER_PID] = pid
    words[GENERATION] += 1


_ZERO: Final = bytes(histogram.BUCKETS * 8)


def _part(words: Sequence[int], lo: int, hi: int, skip_zero: bool = False) -> list[int] | None:
    """Words ``lo``..``hi`` of a slot as a list; with ``skip_zero``, None when they are
    all zero. Speed: a view is tested with one ``memcmp`` before any word becomes a
    Python int (most histograms of a slot are empty: TLS ones without TLS, failure
    times without failures, the retired block before a worker exits)."""
    if isinstance(words, memoryview):
        part = words[lo:hi]
        if skip_zero and part.tobytes() == _ZERO[: (hi - lo) * 8]:
            return None
        return part.tolist()
    out = words[lo:hi]
    out = out if isinstance(out, list) else list(out)
    return None if skip_zero and not any(out) else out


class Snapshot:
    """Decoded, summed copy of one or more slots; plain data, safe to keep.

    ``counters`` holds the stored counters and the :data:`DERIVED` figures;
    ``statuses`` maps each final status code seen to its count.
    """

    __slots__ = ("counters", "gauges", "hist", "hist2", "statuses", "timings")

    def __init__(self) -> None:
        self.counters = dict.fromkeys((*COUNTERS, *DERIVED), 0)
        self.gauges = dict.fromkeys(GAUGES, 0)
        self.hist = [0] * histogram.BUCKETS
        self.hist2 = [0] * histogram.BUCKETS
        self.timings = {name: [0] * histogram.BUCKETS for name in TIMINGS}
        self.statuses: dict[int, int] = {}

    @classmethod
    def of(cls, slots: Sequence[Sequence[int]]) -> Snapshot:
        """Sum ``slots`` (each a 'Q' view of at least SLOT_WORDS words, or a copy of one).
        ``latency.max_us`` and the ``time.*`` gauges are maxed (``time.started_us``: the
        earliest non-zero).

        Speed: the supervisor sums its slots several times a second on a core a worker
        may share, and a run's late requests counted every millisecond it held that
        core, so the counters, the status codes and the histograms are summed a block
        at a time in C (``map``, ``any``), not word by word in Python."""
        snap = cls()
        gauges, statuses = snap.gauges, snap.statuses
        sums = [0] * len(COUNTERS)
        codes = [0] * STATUS_WORDS
        hists = (snap.hist, snap.hist2, *snap.timings.values())
        for words in slots:
            # one copy of each part, then decode without touching shared memory
            head = _part(words, HEADER, HIST_BASE)
            assert head is not None  # (a head is never skipped)
            row = head[: len(COUNTERS)]
            highs = [max(sums[p], row[p]) for p in _MAXED_AT]
            sums[:] = map(add, sums, row)
            for p, high in zip(_MAXED_AT, highs, strict=True):
                sums[p] = high
            seen = head[STATUS_BASE - HEADER : GAUGE_BASE - HEADER]
            if any(seen):
                codes[:] = map(add, codes, seen)
            for name in GAUGES:
                value = head[GAUGE_INDEX[name] - HEADER]
                if name in ("audit.seq", "requests.sending"):
                    continue  # per worker only: a sum means nothing
                if name == "time.started_us":  # the earliest start of any slot
                    old = gauges[name]
                    gauges[name] = min(old, value) if old and value else old or value
                elif name.startswith("time."):  # the latest event of any slot
                    gauges[name] = max(gauges[name], value)
                else:
                    gauges[name] += value
            for total, base in zip(hists, _HIST_BASES, strict=True):
                part = _part(words, base, base + histogram.BUCKETS, skip_zero=True)
                if part is not None:
                    histogram.merge_into(total, part)
        snap.counters.update(zip(COUNTERS, sums, strict=True))
        for code in compress(count(), codes):
            statuses[code] = codes[code]
        snap.derive()
        return snap

    def derive(self) -> None:
        """Fill in the :data:`DERIVED` figures from the stored counters."""
        c = self.counters
        c["requests.total"] = sum(
            c[f"requests.{k}"] for k in ("ok", "failed", "unsent", "abandoned", "lost")
        )
        c["requests.cancelled"] = c["unsent.cancelled"]
        for cls in STATUS_CLASSES:
            c[f"responses.{cls}"] = 0
        for code, n in self.statuses.items():
            if 100 <= code < 600:
                c[f"responses.{STATUS_CLASSES[code // 100 - 1]}"] += n
        for name in ERROR_NAMES:
            c[f"errors.{name}"] = c[f"failed.{name}"] + c[f"unsent.{name}"]

    def _named(self, prefix: str) -> dict[str, int]:
        c = self.counters
        return {n: v for n in ERROR_NAMES if (v := c[f"{prefix}.{n}"])}

    def errors(self) -> dict[str, int]:
        """Non-zero request failures by name, sent or not (``errors.<NAME>``)."""
        return self._named("errors")

    def failures(self) -> dict[str, int]:
        """Sent requests that failed, by name."""
        return self._named("failed")

    def unsent(self) -> dict[str, int]:
        """Requests that never reached the target, by name."""
        return self._named("unsent")

    def connect_errors(self) -> dict[str, int]:
        """Connects that carried no request and failed, by name."""
        return self._named("connect_errors")

    def latency(self) -> dict[str, int]:
        """Percentiles and max in microseconds (from the intended send time)."""
        return histogram.summary(self.hist, self.counters["latency.max_us"])

    def latency_uncorrected(self) -> dict[str, int] | None:
        """Open loop: the same from the actual send time; None for a closed loop."""
        if not any(self.hist2):
            return None
        return histogram.summary(self.hist2, self.counters["latency_uncorrected.max_us"])

    def timing(self, name: str) -> dict[str, int] | None:
        """Percentiles and max in microseconds of one of :data:`TIMINGS` (None: none)."""
        hist = self.timings[name]
        if not any(hist):
            return None
        return histogram.summary(hist, self.counters[TIMINGS[name][1]])

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Snapshot sent={c['requests.sent']} ok={c['requests.ok']} "
            f"failed={c['requests.failed']} unsent={c['requests.unsent']} "
            f"lost={c['requests.lost']} abandoned={c['requests.abandoned']}>"
        )
