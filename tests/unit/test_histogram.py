"""Histogram: bucket math and percentiles against an exact computation."""

import math
import random
from fractions import Fraction

import pytest

from workers.shared import histogram as h


def test_values_below_128us_are_exact() -> None:
    for v in range(128):
        assert h.bucket_low(h.bucket_of(v)) == v == h.bucket_high(h.bucket_of(v))


@pytest.mark.parametrize("v", [128, 129, 255, 256, 1000, 65_535, 1_000_000, 60_000_000, 2**32 - 1])
def test_bucket_contains_value_and_is_narrow(v: int) -> None:
    i = h.bucket_of(v)
    assert h.bucket_low(i) <= v <= h.bucket_high(i)
    assert (h.bucket_high(i) - h.bucket_low(i) + 1) / v <= 1 / 64


def test_buckets_are_contiguous_and_cover_60s() -> None:
    for i in range(1, h.BUCKETS):
        assert h.bucket_low(i) == h.bucket_high(i - 1) + 1
    assert h.bucket_high(h.BUCKETS - 1) >= 60_000_000
    assert h.bucket_of(10**12) == h.BUCKETS - 1  # clamps instead of overflowing


def exact_percentile(samples: list[int], pct: float) -> int:
    ordered = sorted(samples)
    rank = math.ceil(Fraction(str(pct)) * len(ordered) / 100)  # exact: no float drift
    return ordered[max(1, rank) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_exact_within_bucket_precision(seed: int) -> None:
    rng = random.Random(seed)
    samples = [int(rng.lognormvariate(7, 1.5)) for _ in range(20_000)]
    counts = [0] * h.BUCKETS
    for s in samples:
        counts[h.bucket_of(s)] += 1
    for pct in (50, 90, 99, 99.9, 99.99, 100):
        exact = exact_percentile(samples, pct)
        got = h.percentile(counts, pct, max(samples))
        assert exact <= got <= exact * (1 + 1 / 64) + 1, pct
        assert h.bucket_of(got) == h.bucket_of(exact)


def test_percentile_never_exceeds_max_and_empty_is_zero() -> None:
    counts = [0] * h.BUCKETS
    assert h.percentile(counts, 99) == 0
    counts[h.bucket_of(1000)] += 3
    assert h.percentile(counts, 99) == h.bucket_high(h.bucket_of(1000)) > 1000
    assert h.percentile(counts, 99, max_us=1000) == 1000
    assert h.summary(counts, 1000)["p99.99"] <= 1000


def test_p999_rank_uses_integer_arithmetic() -> None:
    # 1000 samples: p99.9 is the 999th value; float 99.9*1000/100 would give 998.999...
    samples = list(range(200, 1200))
    counts = [0] * h.BUCKETS
    for s in samples:
        counts[h.bucket_of(s)] += 1
    assert h.bucket_of(h.percentile(counts, 99.9)) == h.bucket_of(exact_percentile(samples, 99.9))


def test_merge_adds_bucketwise() -> None:
    a = [0] * h.BUCKETS
    b = [0] * h.BUCKETS
    a[5], b[5], b[700] = 2, 3, 1
    h.merge_into(a, b)
    assert (a[5], a[700], sum(a)) == (5, 1, 6)
