"""Thresholds: parsing, exact values, the sustained window, JUnit (pure, injected times)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from poolsvc.metrics.gate import Gate, Verdict, delta, from_config, write_junit
from poolsvc.metrics.thresholds import measure, parse, passes, shown
from workers.shared import histogram
from workers.shared.errors import ConfigError
from workers.shared.slotstats import Snapshot

TARGETS = ["api", "db"]


def snap_of(latencies_us: list[int], failed: int = 0, ok: int | None = None) -> Snapshot:
    s = Snapshot()
    for us in latencies_us:
        s.hist[histogram.bucket_of(us)] += 1
    c = s.counters
    c["requests.ok"] = len(latencies_us) if ok is None else ok
    c["requests.failed"] = failed
    c["requests.total"] = c["requests.ok"] + failed
    c["latency.max_us"] = max(latencies_us, default=0)
    c["latency.sum_us"] = sum(latencies_us)
    return s


@pytest.mark.parametrize(
    ("text", "metric", "agg", "op", "limit", "target"),
    [
        ("latency:p(99)<25ms", "latency", "p(99)", "<", 25_000, None),
        ("latency:p(99.9) <= 1.5s", "latency", "p(99.9)", "<=", 1_500_000, None),
        ("latency:avg<800us", "latency", "avg", "<", 800, None),
        ("requests.failed:rate<0.01", "requests.failed", "rate", "<", 0.01, None),
        ("requests.failed:rate<1%", "requests.failed", "rate", "<", 0.01, None),
        ("errors.read_timeout:count==0", "errors.read_timeout", "count", "==", 0, None),
        ("responses.5xx:rate<0.001", "responses.5xx", "rate", "<", 0.001, None),
        ("rps>5000", "rps", "", ">", 5000, None),
        ("latency{target=api}:p(90)<10", "latency", "p(90)", "<", 10_000, "api"),
        ("http_req_duration=p(95)<200", "latency", "p(95)", "<", 200_000, None),
        ("http_req_failed=rate<0.01", "requests.failed", "rate", "<", 0.01, None),
        ("http_reqs>1000", "requests.total", "count", ">", 1000, None),
        ("tls.full:p(99)<50ms", "tls.full", "p(99)", "<", 50_000, None),
        ("latency<20", "latency", "avg", "<", 20_000, None),
    ],
)
def test_expressions_parse(
    text: str, metric: str, agg: str, op: str, limit: float, target: str | None
) -> None:
    t = parse(text, TARGETS)
    assert (t.metric, t.agg, t.op, t.target) == (metric, agg, op, target)
    assert t.limit == pytest.approx(limit)
    assert not t.abort_on_fail


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("latncy:p(99)<25ms", "did you mean 'latency'"),
        ("latency:p(99)<25parsecs", "unknown unit 'parsecs'"),
        ("latency{target=web}:p(99)<1", "unknown target 'web'"),
        ("latency{host=api}:p(99)<1", "{target=NAME}"),
        ("latency:rate<1", "is a time"),
        ("requests.failed:p(99)<1", "is a count"),
        ("rps:avg>5", "no aggregation"),
        ("responses.5xx{target=api}:count<1", "not kept per target"),
        ("latency:p(99)<25ms for=10s", "needs abort_on_fail"),
        ("latency:p(99)<25ms abort_on_fail for=soon", "bad window"),
        ("latency:p(99)<25ms sometimes", "is not METRIC"),
        ("latency p99 under 25", "is not METRIC"),
        ("requests.ok:count>5x", "unknown unit 'x'"),
    ],
)
def test_a_bad_threshold_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(text, TARGETS)
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_options_and_config_objects() -> None:
    t = parse("latency:p(99) < 25ms abort_on_fail for=10s", TARGETS)
    assert t.abort_on_fail and t.for_s == 10 and t.limit == 25_000
    (u,) = from_config([{"threshold": "rps>5", "abort_on_fail": True, "for": "2m"}], TARGETS)
    assert u.abort_on_fail and u.for_s == 120
    with pytest.raises(ConfigError, match="unknown key 'abort'"):
        from_config([{"threshold": "rps>5", "abort": True}], TARGETS)
    with pytest.raises(ConfigError, match="each is a string"):
        from_config([5], TARGETS)


def test_values_come_from_the_merged_histogram_exactly() -> None:
    # two workers' histograms merged: p99 is the merge's, not an average of the two p99s
    a, b = snap_of([1000] * 98 + [90_000] * 2), snap_of([1000] * 100)
    merged = Snapshot()
    merged.hist = [x + y for x, y in zip(a.hist, b.hist, strict=True)]
    merged.counters["latency.max_us"] = 90_000
    t = parse("latency:p(99)<5ms", TARGETS)
    merged.counters["requests.ok"] = 200
    assert measure(t, merged, 1.0) == histogram.percentile(merged.hist, 99, 90_000) < 5000
    assert measure(t, a, 1.0) > 5000  # one worker alone would have failed it
    assert measure(parse("latency:max<1", TARGETS), merged, 1) == 90_000
    assert measure(parse("latency:avg<1", TARGETS), a, 1) == pytest.approx(
        (98 * 1000 + 2 * 90_000) / 100
    )


def test_no_data_fails_a_time_threshold_and_rates_divide_by_all_requests() -> None:
    empty = snap_of([], failed=10)
    t = parse("latency:p(99)<25ms", TARGETS)
    assert measure(t, empty, 1.0) is None and not passes(t, None)
    assert shown(t, None) == "no data"
    rate = parse("requests.failed:rate<50%", TARGETS)
    assert measure(rate, snap_of([100] * 30, failed=10), 1.0) == 0.25
    assert passes(rate, 0.25) and shown(rate, 0.25) == "25.000%"
    assert measure(parse("rps>1", TARGETS), snap_of([100] * 30, failed=10), 2.0) == 20


def feed_seconds(gate: Gate, seconds: list[bool]) -> float | None:
    """Feed one second per entry: True a slow second, False a fast one; when the
    gate says stop, the second it did."""
    lat: list[int] = []
    gate.feed(0.0, snap_of(lat), [snap_of(lat), snap_of([])])
    for i, slow in enumerate(seconds, start=1):
        lat += [50_000 if slow else 1000] * 100
        whole = snap_of(lat)
        if gate.feed(float(i), whole, [whole, snap_of([])]) is not None:
            return float(i)
    return None


def test_abort_waits_for_a_breach_as_long_as_its_window() -> None:
    t = parse("latency:p(50)<10ms abort_on_fail for=3s", TARGETS)
    assert feed_seconds(Gate([t], TARGETS), [True, True, False, True, True, False]) is None
    assert feed_seconds(Gate([t], TARGETS), [False, True, True, True, False]) == 4.0
    now = parse("latency:p(50)<10ms abort_on_fail", TARGETS)
    assert feed_seconds(Gate([now], TARGETS), [False, True]) == 2.0
    never = parse("latency:p(50)<10ms", TARGETS)  # no abort_on_fail: judged at the end only
    assert feed_seconds(Gate([never], TARGETS), [True] * 5) is None


def test_a_second_is_judged_on_its_own_figures() -> None:
    old, new = snap_of([1000] * 100), snap_of([1000] * 100 + [80_000] * 100)
    second = delta(new, old)
    assert sum(second.hist) == 100 and second.counters["requests.ok"] == 100
    assert measure(parse("latency:p(50)<10ms", TARGETS), second, 1.0) > 10_000


def test_per_target_thresholds_read_their_target() -> None:
    gate = Gate([parse("latency{target=db}:p(50)<10ms", TARGETS)], TARGETS)
    whole, api, db = snap_of([1000] * 10), snap_of([1000] * 10), snap_of([90_000])
    (v,) = gate.verdicts(whole, [api, db], 1.0)
    assert not v.ok and v.value == histogram.percentile(db.hist, 50, 90_000)


def test_junit_has_one_case_per_threshold_and_the_failures(tmp_path: Path) -> None:
    ok, bad = parse("rps>1", TARGETS), parse("latency:p(99)<1ms", TARGETS)
    path = tmp_path / "j.xml"
    write_junit(str(path), [Verdict(ok, 5.0, True), Verdict(bad, 3000.0, False)], 2.5)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1" and suite.get("name")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["rps>1", "latency:p(99)<1ms"]
    assert all(c.get("classname") and c.get("time") is not None for c in cases)
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "3.000ms" in (failure.get("message") or "")


def test_a_threshold_that_stopped_the_run_fails_whatever_the_final_figure() -> None:
    t = parse("latency:p(50)<10ms abort_on_fail for=2s", TARGETS)
    gate = Gate([t], TARGETS)
    assert feed_seconds(gate, [False] * 20 + [True, True]) == 22.0
    fast_overall = snap_of([1000] * 100)
    (v,) = gate.verdicts(fast_overall, [fast_overall, snap_of([])], 22.0)
    assert v.aborted and not v.ok and "stopped the run" in v.line()


def test_the_first_second_is_judged_too() -> None:
    gate = Gate([parse("latency:p(50)<10ms abort_on_fail", TARGETS)], TARGETS)
    slow = snap_of([50_000] * 10)
    assert gate.feed(1.0, slow, [slow, snap_of([])]) is not None
