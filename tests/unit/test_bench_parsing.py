"""The benchmark reads wrk, hey and Locust from their own output: real samples, parsed."""

from collections.abc import Callable

import pytest

from tools.bench.rivals import parse_hey, parse_locust, parse_wrk, parse_wrk2

# From wrk 4.1.0 (`wrk -t1 -c50 -d1s --latency`) against the test nginx; the 99% line
# is set to a millisecond figure so that both units are read.
WRK = """Running 1s test @ http://127.0.0.1:51749/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   175.56us  129.94us   4.25ms   99.41%
    Req/Sec   233.10k     5.39k  240.06k    72.73%
  Latency Distribution
     50%  173.00us
     75%  183.00us
     90%  190.00us
     99%    1.25ms
  255013 requests in 1.10s, 36.48MB read
Requests/sec: 231828.10
Transfer/sec:     33.16MB
"""

# From wrk2 (giltene/wrk2 at 44a94c1, `wrk2 -t1 -c50 -d3s -R20000 --latency`) against
# the test nginx, the detailed spectrum cut; the 99.999% line set to seconds.
WRK2 = """Running 3s test @ http://127.0.0.1:35991/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.24ms  643.99us   6.15ms   74.22%
    Req/Sec       -nan      -nan   0.00      0.00%
  Latency Distribution (HdrHistogram - Recorded Latency)
 50.000%  850.00us
 75.000%    1.63ms
 90.000%    1.93ms
 99.000%    3.54ms
 99.900%    5.57ms
 99.990%    6.11ms
 99.999%    1.15s
100.000%    1.16s

#[Mean    =        1.239, StdDeviation   =        0.644]
  57558 requests in 3.00s, 8.23MB read
Requests/sec:  19181.90
Transfer/sec:      2.74MB
"""

# From hey 0.1.4 (`hey -c 50 -z 1s -cpus 1`): the sections the parser reads, with a
# 204 and a 503 line added to the status codes.
HEY = """Summary:
  Total:\t1.0004 secs
  Requests/sec:\t60243.6464

Latency distribution:
  10% in 0.0002 secs
  50% in 0.0008 secs
  99% in 0.0025 secs

Status code distribution:
  [200]\t60268 responses
  [204]\t12 responses
  [503]\t7 responses
"""

# The layout of Locust's `--csv` stats file (FastHttpUser, one endpoint); percentiles in ms.
LOCUST = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    "GET,/,14044,0,0.10,0.20,0.10,4.76,3.0,14042.17,0.0,2,2,3,3,4,5,6,8,9,12,15\n"
    ",Aggregated,14044,0,0.10,0.20,0.10,4.76,3.0,14042.17,0.0,2,2,3,3,4,5,6,8,9,12,15\n"
)


def test_wrk_units_become_milliseconds() -> None:
    got = parse_wrk(WRK)
    assert got == {"rps": 231828.10, "requests": 255013, "p50": pytest.approx(0.173), "p99": 1.25}


def test_wrk2_reads_its_hdrhistogram_percentiles() -> None:
    got = parse_wrk2(WRK2)
    assert got == {"rps": 19181.90, "requests": 57558, "p50": pytest.approx(0.85), "p99": 3.54}
    assert parse_wrk2(WRK2.replace(" 99.000%    3.54ms", " 99.000%    2.13s"))["p99"] == 2130


def test_hey_counts_only_2xx_and_seconds_become_milliseconds() -> None:
    got = parse_hey(HEY)
    assert got == {"rps": 60243.6464, "requests": 60280, "p50": 0.8, "p99": 2.5}


def test_locust_reads_the_aggregated_row() -> None:
    assert parse_locust(LOCUST) == {"rps": 14042.17, "requests": 14044, "p50": 2.0, "p99": 8.0}


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_wrk, WRK.split("  Latency Distribution")[0]),  # run without --latency
        (parse_hey, HEY.split("Status code")[0]),  # every request failed
        (parse_locust, LOCUST.rsplit(",Aggregated", 1)[0]),
    ],
)
def test_missing_figures_are_an_error_not_a_zero(
    parse: Callable[[str], dict[str, float]], text: str
) -> None:
    with pytest.raises(ValueError, match=r"output|stats"):
        parse(text)
