"""The supervisor's sums (Snapshot.of, merge_into, a row's sparse counts) equal a
word-by-word reference: they are computed a block at a time for speed, and these tests
hold them to the plain definition on random slots (views and lists, empty parts,
maxima, torn-looking all-zero slots)."""

from __future__ import annotations

import random
from array import array

import pytest

from poolsvc.metrics.recording import _sparse
from workers.shared import histogram
from workers.shared import slotstats as stats
from workers.shared.slotstats import Snapshot

BASES = {
    "hist": stats.HIST_BASE,
    "hist2": stats.HIST2_BASE,
    **{name: base for name, (base, _, _) in stats.TIMINGS.items()},
}


Sums = tuple[dict[str, int], dict[int, int], dict[str, list[int]]]


def reference(slots: list[list[int]]) -> Sums:
    """The plain definition: every counter summed (maxima maxed), every status code and
    every histogram bucket summed, word by word."""
    counters = dict.fromkeys(stats.COUNTERS, 0)
    statuses: dict[int, int] = {}
    hists = {name: [0] * histogram.BUCKETS for name in BASES}
    for words in slots:
        for name in stats.COUNTERS:
            at = stats.INDEX[name]
            if at in stats.MAXED:
                counters[name] = max(counters[name], words[at])
            else:
                counters[name] += words[at]
        for code in range(stats.STATUS_WORDS):
            if n := words[stats.STATUS_BASE + code]:
                statuses[code] = statuses.get(code, 0) + n
        for name, base in BASES.items():
            for i in range(histogram.BUCKETS):
                hists[name][i] += words[base + i]
    return counters, statuses, hists


def random_slot(rng: random.Random) -> list[int]:
    words = [0] * stats.SLOT_WORDS
    for name in rng.sample(stats.COUNTERS, rng.randint(0, len(stats.COUNTERS))):
        words[stats.INDEX[name]] = rng.randint(0, 10**9)
    for code in rng.sample(range(100, 600), rng.randint(0, 6)):
        words[stats.STATUS_BASE + code] = rng.randint(1, 10**6)
    for base in rng.sample(list(BASES.values()), rng.randint(0, len(BASES))):
        for i in rng.sample(range(histogram.BUCKETS), rng.randint(1, 40)):
            words[base + i] = rng.randint(1, 10**6)
    return words


def as_view(words: list[int]) -> memoryview:
    return memoryview(array("Q", words))


@pytest.mark.parametrize("seed", range(12))
def test_snapshot_of_equals_the_word_by_word_sum(seed: int) -> None:
    rng = random.Random(seed)
    slots = [random_slot(rng) for _ in range(rng.randint(1, 5))]
    if seed % 3 == 0:
        slots.append([0] * stats.SLOT_WORDS)  # a slot nothing has written yet
    counters, statuses, hists = reference(slots)
    for given in (slots, [as_view(s) for s in slots]):
        snap = Snapshot.of(given)
        assert {n: snap.counters[n] for n in stats.COUNTERS} == counters
        assert snap.statuses == statuses
        assert snap.hist == hists["hist"]
        assert snap.hist2 == hists["hist2"]
        for name in stats.TIMINGS:
            assert snap.timings[name] == hists[name], name


def test_a_maximum_is_the_largest_of_any_slot_not_the_sum() -> None:
    slots = [[0] * stats.SLOT_WORDS for _ in range(3)]
    for i, value in enumerate((5, 900, 40)):
        slots[i][stats.LAG_MAX] = value
        slots[i][stats.REQ_LATE] = value
    snap = Snapshot.of([as_view(s) for s in slots])
    assert snap.counters["send_lag.max_us"] == 900
    assert snap.counters["requests.late"] == 945


@pytest.mark.parametrize("seed", range(8))
def test_merge_into_adds_bucket_by_bucket(seed: int) -> None:
    rng = random.Random(seed)
    total = [rng.choice((0, 0, rng.randint(1, 99))) for _ in range(histogram.BUCKETS)]
    if seed % 2:
        total = [0] * histogram.BUCKETS  # the first merge into an empty total
    counts = [rng.choice((0, 0, 0, rng.randint(1, 99))) for _ in range(histogram.BUCKETS)]
    expect = [a + b for a, b in zip(total, counts, strict=True)]
    histogram.merge_into(total, counts)
    assert total == expect
    counts[0] += 1  # the total is its own list, not the counts merged into it
    assert total == expect


@pytest.mark.parametrize("seed", range(8))
def test_sparse_lists_exactly_the_buckets_that_grew(seed: int) -> None:
    rng = random.Random(seed)
    old = [rng.randint(0, 50) for _ in range(histogram.BUCKETS)]
    new = list(old)
    for i in rng.sample(range(histogram.BUCKETS), rng.randint(0, 70)):
        new[i] += rng.randint(1, 1000)
    pairs = enumerate(zip(new, old, strict=True))
    expect = [x for i, (a, b) in pairs if a != b for x in (i, a - b)]
    assert list(_sparse(new, old)) == expect


def test_sparse_refuses_histograms_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="buckets"):
        _sparse([0] * 10, [0] * 11)
