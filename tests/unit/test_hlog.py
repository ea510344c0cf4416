"""The HdrHistogram interval log, read back by the reference reader (``hdrhistogram``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from poolsvc.metrics import hlog
from workers.shared import histogram
from workers.shared.slotstats import Snapshot


def counts_of(values: list[int]) -> list[int]:
    counts = [0] * histogram.BUCKETS
    for v in values:
        counts[histogram.bucket_of(v)] += 1
    return counts


def at_rank(counts: list[int], rank: int) -> int:
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return histogram.bucket_high(i)
    raise AssertionError(rank)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_histogram_decodes_to_our_counts_and_our_percentiles(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(7, 2)) + 1 for _ in range(5000)]
    values.append(2**32 + 5)  # past the top: our last bucket, clamped like ours
    counts = counts_of(values)
    decoded = HdrHistogram.decode(hlog.encode(counts))
    assert decoded.get_total_count() == sum(counts)
    for i, n in enumerate(counts):  # lossless: each of our buckets is there, whole
        if n:
            assert decoded.get_count_at_value(min(histogram.bucket_high(i), hlog.HIGHEST)) == n
    for p in (1, 25, 50, 90, 99, 99.9, 99.99, 100):
        # the reference rounds a percentile's rank (ours takes the nearest rank above):
        # compare at its rank, to 3 significant digits
        rank = max(1, int(p / 100 * sum(counts) + 0.5))
        ours = at_rank(counts, rank)
        assert decoded.get_value_at_percentile(p) == pytest.approx(ours, rel=1e-3), p


def test_every_one_of_our_buckets_lands_apart_in_the_hdr_counts() -> None:
    """Lossless: no two of our buckets share an HdrHistogram bucket."""
    reference = HdrHistogram(hlog.LOWEST, hlog.HIGHEST, hlog.DIGITS)
    seen = {}
    for i in range(histogram.BUCKETS):
        value = min(histogram.bucket_high(i), hlog.HIGHEST)
        at = hlog.hdr_index(value)
        assert at == reference.get_counts_array_index(value)
        assert at not in seen, (i, seen.get(at))
        seen[at] = i


def test_large_counts_and_long_zero_runs_round_trip() -> None:
    counts = [0] * histogram.BUCKETS
    counts[0], counts[900], counts[-1] = 2**40 + 3, 1, 7
    decoded = HdrHistogram.decode(hlog.encode(counts))
    assert decoded.get_total_count() == sum(counts)
    assert decoded.get_count_at_value(0) == 2**40 + 3


def test_an_empty_interval_is_a_valid_empty_histogram() -> None:
    assert HdrHistogram.decode(hlog.encode([0] * histogram.BUCKETS)).get_total_count() == 0


def test_tags_cannot_break_a_line() -> None:
    assert hlog.tag("api, v2\nx") == "api__v2_x"
    assert hlog.tag("") == "_"


def snap_with(values: list[int]) -> Snapshot:
    snap = Snapshot()
    for v in values:
        snap.hist[histogram.bucket_of(v)] += 1
    snap.counters["latency.max_us"] = max(values, default=0)
    return snap


def test_the_intervals_of_a_log_add_up_to_the_run(tmp_path: Path) -> None:
    """Each target's intervals decode, one tag each, and add up to its totals."""
    rng = random.Random(7)
    path = tmp_path / "run.hlog"
    seen: dict[str, list[int]] = {"api": [], "db": []}
    with hlog.HlogFile(str(path), ["api", "db"], start_wall=1_700_000_000.25) as log:
        for second in range(1, 6):
            for name in seen:
                seen[name] += [rng.randint(50, 90_000) for _ in range(rng.randint(0, 300))]
            owns = [snap_with(seen["api"]), snap_with(seen["db"])]
            log.feed(float(second), Snapshot(), owns)
    reader = HistogramLogReader(str(path), HdrHistogram(1, hlog.HIGHEST, 3))
    try:
        first = reader.get_next_interval_histogram()  # the reference reader reads it
        assert first is not None and first.get_tag() == "api"
        assert reader.get_start_time_sec() == pytest.approx(1_700_000_000.25)
    finally:
        reader.close()
    totals = {name: HdrHistogram(1, hlog.HIGHEST, 3) for name in seen}
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("Tag=")]
    assert len(lines) == 10
    for line in lines:
        name = line[4 : line.index(",")]
        totals[name].decode_and_add(line.rsplit(",", 1)[1])
    for name, values in seen.items():
        counts = counts_of(values)
        assert totals[name].get_total_count() == len(values)
        for p in (50, 99, 100):
            rank = max(1, int(p / 100 * len(values) + 0.5))
            assert totals[name].get_value_at_percentile(p) == pytest.approx(
                at_rank(counts, rank), rel=1e-3
            )


def test_our_decoder_gives_back_exactly_what_was_encoded() -> None:
    rng = random.Random(11)
    counts = counts_of([int(rng.lognormvariate(8, 2.5)) + 1 for _ in range(4000)])
    counts[5] = 2**41  # a count past seven bytes of varint
    assert hlog.decode(hlog.encode(counts)) == counts
    with pytest.raises(ValueError, match="not a V2"):
        hlog.decode("AAAAAAAAAAA=")


def test_logs_of_shards_merge_per_tag_and_second(tmp_path: Path) -> None:
    paths = []
    for k, start in enumerate((1_700_000_000.2, 1_700_000_000.7)):
        path = tmp_path / f"s{k}.hlog"
        with hlog.HlogFile(str(path), ["api"], start_wall=start) as log:
            log.feed(1.0, Snapshot(), [snap_with([1000] * (10 + k))])
            log.feed(2.0, Snapshot(), [snap_with([1000] * (10 + k) + [9000] * 5)])
        paths.append(str(path))
    out = tmp_path / "merged.hlog"
    hlog.merge_logs(paths, str(out))
    _, lines = hlog.read_log(str(out))
    assert sum(sum(c) for *_, c in lines) == 15 + 16  # every sample of both, once
    assert {tag for tag, *_ in lines} == {"api"}
