"""Log-linear latency histogram in microseconds (HdrHistogram-style), fixed size.

Theory of operation: values below ``2**SUB_BITS`` (128 us) get one bucket each, so
they are exact.  Above that, every power-of-two range ``[2**k, 2**(k+1))`` is split
into ``HALF`` (64) equal buckets, so a bucket is at most 1/64 of its value wide:
a reported value is within 1.6 % of the true one.  Values up to ``2**32`` us
(71 minutes) fit in ``BUCKETS`` (1728) counters; larger ones land in the last bucket.

The histogram is only an array of counts, so it can live in any buffer (a bytearray
in tests, a shared-memory slot in a worker) and histograms merge by adding
counts bucket by bucket.  Recording does no allocation: one index computation and
one increment.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import add
from typing import Final

SUB_BITS: Final = 7
HALF: Final = 1 << (SUB_BITS - 1)  # 64 buckets per power of two above the linear range
MAX_BITS: Final = 32
BUCKETS: Final = HALF * (MAX_BITS - SUB_BITS) + (1 << SUB_BITS)  # 1728
PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 99.9, 99.99)


def bucket_of(value_us: int) -> int:
    """Index of the bucket that counts ``value_us`` (negative values count as 0)."""
    if value_us < 128:
        return value_us if value_us > 0 else 0
    shift = value_us.bit_length() - SUB_BITS
    index = (shift << 6) + (value_us >> shift)
    return index if index < BUCKETS else BUCKETS - 1


def bucket_low(index: int) -> int:
    """Smallest value counted by bucket ``index``."""
    if index < 128:
        return index
    shift = (index >> 6) - 1
    return (index - (shift << 6)) << shift


def bucket_high(index: int) -> int:
    """Largest value counted by bucket ``index`` (HdrHistogram's highest equivalent value)."""
    if index < 128:
        return index
    shift = (index >> 6) - 1
    return bucket_low(index) + (1 << shift) - 1


def merge_into(total: list[int], counts: Sequence[int]) -> None:
    """Add ``counts`` bucket by bucket into ``total`` (both of length BUCKETS).

    Speed: the supervisor merges a dozen of these per snapshot, several times a second,
    on a core a worker may share; a bucket-by-bucket loop in Python took ~0.1 ms per
    histogram, so the scan and the sum run in C (``any``, ``map``) and an empty
    histogram costs one scan (and the first one merged into an empty total, a copy)."""
    if any(counts):
        total[:] = map(add, total, counts) if any(total) else counts


def percentile(counts: Sequence[int], pct: float, max_us: int | None = None) -> int:
    """Value at percentile ``pct`` (0-100]: the top of the bucket holding that rank.

    The rank is ``ceil(pct/100 * n)`` (nearest-rank definition), so p100 is the
    largest sample's bucket.  When ``max_us`` (the exact maximum) is given the
    result is clamped to it: a reported percentile never exceeds the reported max.
    Returns 0 for an empty histogram.
    """
    n = sum(counts)
    if n == 0:
        return 0
    basis_points = round(pct * 100)  # integer arithmetic: 99.9 * n must not round down
    rank = max(1, -(-basis_points * n // 10_000))
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            value = bucket_high(i)
            return min(value, max_us) if max_us is not None else value
    raise AssertionError("unreachable: rank <= n")


def summary(counts: Sequence[int], max_us: int) -> dict[str, int]:
    """Percentiles in microseconds keyed ``p50``, ``p90`` ... ``p99.99`` plus ``max``."""
    out = {f"p{p:g}": percentile(counts, p, max_us) for p in PERCENTILES}
    out["max"] = max_us
    return out
