"""The requests adapter and the httpx transport against real servers: a real app
(httpbin under gunicorn), nginx and the embedded target, restarts included."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

import poolsvc
from poolsvc.target import TargetServer
from tests.conftest import until
from tools.nginx import Nginx, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def httpbin() -> Iterator[str]:
    """httpbin served by gunicorn (one worker, threads) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--threads", "4", "--log-level", "warning", "httpbin:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    adapter = poolsvc.adapters.RequestsAdapter(max_per_host=4)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    yield s
    s.close()


@pytest.fixture
def hx() -> Iterator[httpx.Client]:
    with httpx.Client(transport=poolsvc.adapters.HTTPXTransport(max_per_host=4)) as c:
        yield c


def pool_of(adapter: object) -> dict:
    client = adapter.client  # type: ignore[attr-defined]
    return dict(client.stats())


# requests ---------------------------------------------------------------------------
def test_requests_methods_json_and_headers(session: requests.Session, httpbin: str) -> None:
    for method in ("get", "post", "put", "patch", "delete"):
        r = getattr(session, method)(f"{httpbin}/{method}", headers={"X-Probe": "1"})
        assert r.status_code == 200 and r.json()["headers"]["X-Probe"] == "1"
    r = session.post(f"{httpbin}/post", json={"a": [1, 2]}, params={"q": "v w"})
    assert r.json()["json"] == {"a": [1, 2]} and r.json()["args"] == {"q": "v w"}
    r = session.post(f"{httpbin}/post", data=(c for c in [b"chunk-", b"ed"]))  # a generator
    assert r.json()["data"] == "chunk-ed"
    head = session.head(f"{httpbin}/get")
    assert head.status_code == 200 and head.content == b""
    assert session.get(f"{httpbin}/status/204").content == b""
    assert session.get(f"{httpbin}/status/418").status_code == 418
    (stats,) = pool_of(session.get_adapter(httpbin)).values()
    assert stats["created"] < stats["requests"]["sent"]  # kept alive and reused


def test_requests_redirects_cookies_gzip_and_streams(session: requests.Session,
                                                     httpbin: str) -> None:  # fmt: skip
    r = session.get(f"{httpbin}/redirect/3")
    assert r.status_code == 200 and len(r.history) == 3
    r = session.get(f"{httpbin}/cookies/set?flavour=oat")
    assert r.json()["cookies"] == {"flavour": "oat"} and session.cookies["flavour"] == "oat"
    assert session.get(f"{httpbin}/gzip").json()["gzipped"] is True
    assert session.get(f"{httpbin}/deflate").json()["deflated"] is True
    lines = list(session.get(f"{httpbin}/stream/20", stream=True).iter_lines())
    assert len(lines) == 20
    big = session.get(f"{httpbin}/bytes/102400?seed=1", stream=True)
    pieces = list(big.iter_content(8192))
    assert sum(map(len, pieces)) == 102400


def test_requests_large_bodies_from_the_embedded_target(session: requests.Session,
                                                        target: TargetServer) -> None:  # fmt: skip
    url = f"http://{target.host}:{target.port}"
    assert len(session.get(f"{url}/bytes/3000000").content) == 3_000_000
    assert len(session.get(f"{url}/chunked/300000").content) == 300_000
    assert session.get(f"{url}/status/304").status_code == 304


def test_requests_errors_are_requests_errors_with_ours_as_cause(
    session: requests.Session, target: TargetServer
) -> None:
    with pytest.raises(requests.ConnectionError) as info:
        session.get(f"http://127.0.0.1:{free_port()}/")
    cause = info.value.__cause__
    assert isinstance(cause, poolsvc.ConnectError) and cause.name == "ECONNREFUSED"
    with pytest.raises(requests.exceptions.ReadTimeout) as timeout:
        session.get(f"http://{target.host}:{target.port}/delay/2000", timeout=(1, 0.2))
    assert isinstance(timeout.value.__cause__, poolsvc.ReadTimeout)


def test_requests_go_on_through_a_server_restart(session: requests.Session,
                                                 target: TargetServer) -> None:  # fmt: skip
    url = f"http://{target.host}:{target.port}/"
    assert session.get(url).status_code == 200
    target.restart()
    until(lambda: target.stats().get("listening", True))
    assert [session.get(url).status_code for _ in range(5)] == [200] * 5


def test_requests_and_httpx_over_tls_verified(tmp_path: Path, nginx: Nginx) -> None:
    with TargetServer(tls=True) as t:
        ca = tmp_path / "ca.pem"
        ca.write_text(t.ca_pem)
        url = f"https://{t.host}:{t.port}/bytes/1000"
        s = requests.Session()
        s.mount("https://", poolsvc.adapters.RequestsAdapter())
        s.mount("http://", poolsvc.adapters.RequestsAdapter())
        assert len(s.get(url, verify=str(ca)).content) == 1000
        with pytest.raises(requests.exceptions.SSLError) as info:
            s.get(url, verify=True)  # the system's CAs: the throwaway CA is unknown
        assert isinstance(info.value.__cause__, poolsvc.TLSError)
        assert s.get(f"http://127.0.0.1:{nginx.port}/chunked").text == "chunk\n"
        s.close()
        transport = poolsvc.adapters.HTTPXTransport(verify=str(ca))
        with httpx.Client(transport=transport) as hx:
            assert [len(hx.get(url).content) for _ in range(3)] == [1000] * 3


# httpx ------------------------------------------------------------------------------
def test_httpx_methods_redirects_and_decoding(hx: httpx.Client, httpbin: str) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        r = hx.request(method, f"{httpbin}/{method.lower()}", headers={"X-Probe": "1"})
        assert r.status_code == 200 and r.json()["headers"]["X-Probe"] == "1"
    assert hx.post(f"{httpbin}/post", json={"k": 1}).json()["json"] == {"k": 1}
    r = hx.get(f"{httpbin}/redirect/2", follow_redirects=True)
    assert r.status_code == 200 and len(r.history) == 2
    assert hx.get(f"{httpbin}/gzip").json()["gzipped"] is True
    with hx.stream("GET", f"{httpbin}/stream-bytes/50000?chunk_size=1000") as streamed:
        assert sum(len(c) for c in streamed.iter_bytes()) == 50000
    head = hx.head(f"{httpbin}/get")
    assert head.status_code == 200 and head.content == b""
    assert hx.get(f"{httpbin}/status/204").content == b""
    r = hx.post(f"{httpbin}/post", content=iter([b"a", b"b", b"c"]))  # chunked upload
    assert r.json()["data"] == "abc"
    assert r.extensions["http_version"] == b"HTTP/1.1"


def test_httpx_large_bodies_304_and_restart(hx: httpx.Client, target: TargetServer) -> None:
    url = f"http://{target.host}:{target.port}"
    assert len(hx.get(f"{url}/bytes/3000000").content) == 3_000_000
    assert hx.get(f"{url}/status/304").status_code == 304
    target.restart()
    until(lambda: target.stats().get("listening", True))
    assert [hx.get(f"{url}/").status_code for _ in range(5)] == [200] * 5


def test_httpx_errors_are_httpx_errors_with_ours_as_cause(
    hx: httpx.Client, target: TargetServer
) -> None:
    with pytest.raises(httpx.ConnectError) as info:
        hx.get(f"http://127.0.0.1:{free_port()}/")
    assert isinstance(info.value.__cause__, poolsvc.ConnectError)
    with pytest.raises(httpx.ReadTimeout):
        hx.get(f"http://{target.host}:{target.port}/delay/2000", timeout=0.2)


def test_httpx_against_nginx(hx: httpx.Client, nginx: Nginx) -> None:
    url = f"http://127.0.0.1:{nginx.port}"
    assert [hx.get(f"{url}/").text for _ in range(20)] == ["ok\n"] * 20
    assert hx.get(f"{url}/chunked").text == "chunk\n"
