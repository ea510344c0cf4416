"""``poolsvc.Client`` over loopback: the embedded target, nginx, hostile servers of our own.

Each guarantee of the service's pool is checked through the library: reuse,
validation, the stale keep-alive re-send (idempotent only), timeouts, pool limits,
the breaker, fault injection with the service's names and seeds, TLS (verified,
resumed), threads, and close() leaving no descriptor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import poolsvc
from poolsvc.target import TargetServer
from tests.conftest import until
from tests.hostile import Hostile
from tools.nginx import Nginx, free_port

pytestmark = pytest.mark.integration


def base(t: TargetServer) -> str:
    return f"http://{t.host}:{t.port}"


@pytest.fixture
def client() -> Iterator[poolsvc.Client]:
    with poolsvc.Client(timeout=poolsvc.Timeout(connect=2, read=5, pool=2)) as c:
        yield c


def one(c: poolsvc.Client) -> dict:  # the stats of the client's only host
    (stats,) = c.stats().values()
    return stats


def test_methods_bodies_and_framings(target: TargetServer, client: poolsvc.Client) -> None:
    url = base(target)
    r = client.get(url + "/")
    assert (r.status, r.reason, r.content, r.text) == (200, "OK", b"ok\n", "ok\n")
    assert r.headers["content-type"] == r.headers["Content-Type"] == "text/plain"
    assert r.elapsed > 0 and r.complete
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert client.request(method, url + "/", body=b"x" * 100).status == 200
    assert client.post(url + "/", json={"a": [1, 2]}).status == 200
    head = client.head(url + "/bytes/1000")
    assert head.status == 200 and head.content == b"" and head.headers["content-length"] == "1000"
    assert client.get(url + "/chunked/5000").content == client.get(url + "/bytes/5000").content
    assert len(client.get(url + "/bytes/5000").content) == 5000
    assert client.get(url + "/status/204").content == b""
    assert client.get(url + "/status/304").status == 304
    closing = client.get(url + "/close-delimited/3000")
    assert len(closing.content) == 3000
    stats = one(client)
    assert stats["evicted"].get("server_close", 0) >= 1  # a close-delimited body ends its socket
    assert stats["requests"]["ok"] == stats["requests"]["sent"] == 14
    assert stats["created"] == 1 and stats["reused"] == 13


def test_a_large_body_streams_in_pieces_and_the_connection_goes_back(
    target: TargetServer, client: poolsvc.Client
) -> None:
    url = base(target) + "/bytes/4000000"
    with client.get(url, stream=True) as r:
        assert not r.complete
        sizes = [len(piece) for piece in r.iter_bytes()]
    assert sum(sizes) == 4_000_000 and max(sizes) <= 65536 and len(sizes) > 10
    assert one(client)["idle"] == 1  # read to its end: back in the pool
    with client.get(url, stream=True) as r:
        next(r.iter_bytes())  # left in the middle: the connection cannot be reused
    stats = one(client)
    assert stats["idle"] == 0 and stats["evicted"]["error"] == 1
    assert client.get(base(target) + "/").status == 200


def test_json_and_raise_for_status(target: TargetServer, client: poolsvc.Client) -> None:
    r = client.get(base(target) + "/status/503")
    with pytest.raises(poolsvc.HTTPStatusError) as info:
        r.raise_for_status()
    assert info.value.name == "status_5xx" and info.value.phase == "status"
    assert info.value.response is r
    assert one(client)["errors"] == {"status_5xx": 1}  # counted as the service counts it
    body = client.get(base(target) + "/")
    with pytest.raises(ValueError, match=r"JSON|Expecting|unexpected"):
        body.json()  # "ok\n" is not JSON


def test_bad_input_raises_before_anything_is_sent(
    target: TargetServer, client: poolsvc.Client
) -> None:
    url = base(target)
    cases = {
        "url": ["ftp://x/", "http:///nohost", "http://u:p@127.0.0.1/", "http://h:99999/",
                f"{url}/a b"],
        "method": ["GE T", "CONNECT"],
        "headers": [{"X": "a\nb"}, {"Transfer-Encoding": "chunked"}, {"bad name": "v"}],
    }  # fmt: skip
    received = target.stats()["requests"]
    calls = {
        "url": lambda v: client.get(v),
        "method": lambda v: client.request(v, url + "/"),
        "headers": lambda v: client.get(url + "/", headers=v),
    }
    for key, values in cases.items():
        for value in values:
            with pytest.raises(poolsvc.InvalidRequest) as info:
                calls[key](value)
            assert info.value.key == key, value
            assert "\n" not in str(info.value)
    with pytest.raises(poolsvc.InvalidRequest):
        client.post(url + "/", body=b"x", json={})
    with pytest.raises(poolsvc.InvalidRequest):
        poolsvc.Client(timeout=-1)
    with pytest.raises(poolsvc.InvalidRequest):
        poolsvc.Client(faults=[{"fault": "explode", "rate": 1}])
    assert target.stats()["requests"] == received
    assert client.stats() == {}  # not even a pool was made


def test_refused_and_unresolvable_are_typed_and_counted(client: poolsvc.Client) -> None:
    port = free_port()
    with pytest.raises(poolsvc.ConnectError) as info:
        client.get(f"http://127.0.0.1:{port}/")
    assert (info.value.name, info.value.phase, info.value.culprit) == (
        "ECONNREFUSED", "connect", "remote")  # fmt: skip
    stats = one(client)
    assert stats["errors"] == {"ECONNREFUSED": 1} and stats["errors_by_phase"] == {"connect": 1}
    assert stats["requests"]["unsent"] == 1
    with pytest.raises(poolsvc.ConnectError) as info:
        client.get("http://no-such-host.invalid/")
    assert info.value.name == "EOTHER" and "resolve" in str(info.value)


def test_read_timeout(target: TargetServer, client: poolsvc.Client) -> None:
    with pytest.raises(poolsvc.ReadTimeout) as info:
        client.get(base(target) + "/delay/3000", timeout=0.2)
    assert info.value.name == "read_timeout" and info.value.phase == "read"
    assert one(client)["requests"]["failed"] == 1  # sent, then failed


def test_pool_wait_and_exhaustion(target: TargetServer) -> None:
    url = base(target) + "/bytes/100000"
    with poolsvc.Client(max_per_host=1, timeout=poolsvc.Timeout(pool=0.2)) as c:
        held = c.get(url, stream=True)
        with pytest.raises(poolsvc.PoolTimeout) as info:
            c.get(url)
        assert info.value.name == "pool_timeout" and info.value.phase == "pool"
        held.close()
        assert c.get(url).status == 200
    with poolsvc.Client(max_per_host=1, pool_block=False) as c:
        held = c.get(url, stream=True)
        with pytest.raises(poolsvc.PoolExhausted):
            c.get(url)
        held.read()
        assert c.get(url).status == 200


def test_a_waiting_thread_gets_the_connection_handed_over(target: TargetServer) -> None:
    with poolsvc.Client(max_per_host=1) as c:
        held = c.get(base(target) + "/bytes/2000000", stream=True)  # not complete yet
        assert not held.complete
        got: list[int] = []
        waiting = threading.Thread(target=lambda: got.append(c.get(base(target) + "/").status))
        waiting.start()
        until(lambda: one(c)["waiting"] == 1)
        held.read()  # back to the pool: handed to the waiter
        waiting.join(5)
        assert got == [200] and one(c)["created"] == 1


def restarted(t: TargetServer, down_ms: int = 0) -> None:
    """Restart the target (every connection closed) and wait until it listens again."""
    t.restart(down_ms=down_ms)
    until(lambda: t.stats().get("listening", True))


def test_a_stale_connection_is_re_sent_once_if_idempotent(target: TargetServer) -> None:
    """The server restarts between two requests (its sockets closed); validation is off
    (validate_after 60 s), so the request meets the dead socket itself."""
    with poolsvc.Client(validate_after=60) as c:
        assert c.get(base(target) + "/").status == 200
        restarted(target)
        assert c.get(base(target) + "/").status == 200
        stats = one(c)
        assert stats["stale_reuse"] == 1 and stats["requests"]["sent"] == 2
        restarted(target)
        with pytest.raises(poolsvc.ReadError) as info:
            c.post(base(target) + "/", body=b"once")  # not idempotent: never re-sent
        assert info.value.phase == "read"
        assert one(c)["stale_reuse"] == 1


def test_validation_on_checkout_evicts_a_closed_idle_connection(target: TargetServer) -> None:
    with poolsvc.Client(validate_after=0.0) as c:
        c.get(base(target) + "/")
        restarted(target)
        assert c.get(base(target) + "/").status == 200
        stats = one(c)
        assert stats["evicted"] == {"validation": 1} and stats["stale_reuse"] == 0


def test_requests_go_on_through_server_restarts(target: TargetServer) -> None:
    retry = poolsvc.Retry(total=5, backoff_base=0.05, backoff_cap=0.2)
    errors: list[Exception] = []
    done = threading.Event()
    counts = [0]

    def load(c: poolsvc.Client) -> None:
        while not done.is_set():
            try:
                assert c.get(base(target) + "/").status == 200
                counts[0] += 1
            except poolsvc.ClientError as exc:
                errors.append(exc)

    with poolsvc.Client(max_per_host=4, retries=retry, breaker=False) as c:
        threads = [threading.Thread(target=load, args=(c,)) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(3):
            time.sleep(0.1)
            target.restart(down_ms=100)
        done.set()
        for t in threads:
            t.join(10)
    assert errors == [] and counts[0] > 100


def test_breaker_opens_on_a_failing_host_and_can_be_switched_off() -> None:
    with Hostile("status", status=503) as bad:
        url = f"http://{bad.host}:{bad.port}/"
        with poolsvc.Client() as c:
            statuses = [c.get(url).status for _ in range(5)]
            with pytest.raises(poolsvc.BreakerOpen) as info:
                c.get(url)
            assert statuses == [503] * 5 and info.value.phase == "breaker"
            stats = one(c)
            assert stats["breaker"]["state"] == "OPEN" and stats["errors"]["breaker_open"] == 1
            assert bad.count == 5  # refused before any I/O
        with poolsvc.Client(breaker=False) as c:
            assert [c.get(url).status for _ in range(10)] == [503] * 10


def test_faults_use_the_service_names_and_seeds(target: TargetServer) -> None:
    def outcomes(seed: int) -> list[str]:
        faults = [{"fault": "reset", "rate": 0.3, "seed": seed}]
        out = []
        with poolsvc.Client(faults=faults, breaker=False) as c:
            for _ in range(40):
                try:
                    c.get(base(target) + "/")
                    out.append("ok")
                except poolsvc.ReadError as exc:
                    out.append(f"{exc.name}/{exc.phase}")
            stats = one(c)
        resets = out.count("ECONNRESET/injected")
        assert resets + out.count("ok") == 40  # every failure: the injected reset, named
        assert stats["injected"]["reset"] == stats["errors_by_phase"]["injected"] == resets
        return out

    first = outcomes(7)
    assert first == outcomes(7) != outcomes(8)
    assert 0 < first.count("ECONNRESET/injected") < 40
    with (
        poolsvc.Client(faults=[{"fault": "connect_fail", "rate": 1.0}]) as c,
        pytest.raises(poolsvc.ConnectError) as info,
    ):
        c.get(base(target) + "/")
    assert (info.value.name, info.value.phase) == ("ECONNREFUSED", "injected")
    timeouts = [{"fault": "timeout", "rate": 1.0, "timeout_ms": 50}]
    with poolsvc.Client(faults=timeouts) as c, pytest.raises(poolsvc.ReadTimeout):
        c.get(base(target) + "/")


def test_threads_share_the_pool_and_every_request_is_counted(target: TargetServer) -> None:
    with poolsvc.Client(max_per_host=4) as c:

        def load() -> None:
            for _ in range(200):
                assert c.get(base(target) + "/").status == 200

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = one(c)
    assert stats["requests"]["ok"] == 1600 and stats["created"] <= 4
    assert stats["created"] + stats["reused"] == 1600


def test_the_total_cap_holds_across_hosts(nginx: Nginx, target: TargetServer) -> None:
    urls = [f"http://127.0.0.1:{nginx.port}/", f"http://127.0.0.1:{nginx.short_port}/",
            base(target) + "/"]  # fmt: skip
    with poolsvc.Client(max_total=2) as c:
        for _ in range(3):
            for url in urls:
                assert c.get(url).status == 200
                open_now = sum(h["active"] + h["idle"] for h in c.stats().values())
                assert open_now <= 2
        assert sum(h["evicted"].get("resized", 0) for h in c.stats().values()) >= 1


def test_idle_connections_expire(nginx: Nginx) -> None:
    with poolsvc.Client(idle_timeout=0.05) as c:
        c.get(f"http://127.0.0.1:{nginx.port}/")
        time.sleep(0.1)
        c.get(f"http://127.0.0.1:{nginx.port}/")
        assert one(c)["evicted"] == {"idle_timeout": 1}


def test_warm_opens_idle_connections(nginx: Nginx) -> None:
    with poolsvc.Client(max_per_host=5) as c:
        assert c.warm(f"http://127.0.0.1:{nginx.port}/", 8) == 5
        stats = one(c)
        assert stats["idle"] == stats["created"] == 5
        c.get(f"http://127.0.0.1:{nginx.port}/")
        assert one(c)["created"] == 5


def test_close_leaves_no_descriptor(nginx: Nginx, target: TargetServer) -> None:
    process = psutil.Process()
    before = process.num_fds()
    c = poolsvc.Client(max_per_host=4)
    for _ in range(3):
        c.get(f"http://127.0.0.1:{nginx.port}/")
        c.get(base(target) + "/")
    held = c.get(base(target) + "/bytes/100000", stream=True)
    c.warm(f"http://127.0.0.1:{nginx.port}/", 4)
    with pytest.raises(poolsvc.ConnectError):
        c.get(f"http://127.0.0.1:{free_port()}/")
    assert process.num_fds() > before
    c.close()
    assert process.num_fds() == before
    with pytest.raises(poolsvc.ClientError):
        held.read()
    with pytest.raises(poolsvc.PoolClosed):
        c.get(base(target) + "/")


def test_tls_verified_resumed_and_refused_when_untrusted(tmp_path: Path) -> None:
    with TargetServer(tls=True) as t:
        ca = tmp_path / "ca.pem"
        ca.write_text(t.ca_pem)
        url = f"https://{t.host}:{t.port}/"
        with poolsvc.Client(verify=str(ca), max_requests=1) as c:
            assert [c.get(url).status for _ in range(4)] == [200] * 4
            (snap,) = [h.meter.snapshot().counters for h in c.hosts()]
        assert snap["tls.handshakes.full"] >= 1 and snap["tls.handshakes.resumed"] >= 1
        with poolsvc.Client() as c, pytest.raises(poolsvc.TLSError) as info:
            c.get(url)  # the system's CAs do not know the throwaway one
        assert (info.value.name, info.value.phase) == ("tls_cert_verify_failed", "tls")
        with poolsvc.Client(verify=False) as c:
            assert c.get(url).status == 200


def test_stats_and_the_collector_agree(nginx: Nginx) -> None:
    url = f"http://127.0.0.1:{nginx.port}/"
    with poolsvc.Client() as c:
        for _ in range(25):
            c.get(url)
        with pytest.raises(poolsvc.ConnectError):
            c.get(f"http://127.0.0.1:{free_port()}/")
        registry = CollectorRegistry()
        registry.register(c.collector())
        text = generate_latest(registry).decode()
        stats = c.stats()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert samples[("poolsvc_requests_total", (("result", "ok"),))] == 25
    assert samples[("poolsvc_errors_total", (("error", "ECONNREFUSED"), ("sent", "false")))] == 1
    key = f"http://127.0.0.1:{nginx.port}"
    assert samples[("poolsvc_pool_connections", (("state", "idle"), ("target", key)))] == (
        stats[key]["idle"])  # fmt: skip
    assert samples[("poolsvc_breaker_state", (("target", key),))] == 0
    assert stats[key]["latency_us"]["p50"] > 0
    assert families["poolsvc_request_duration_seconds"].type == "histogram"
