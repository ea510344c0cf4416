"""The library's pure parts: headers, routes, retries, the exception table (and its docs)."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import pytest

import poolsvc
from poolsvc.library import exceptions as ex
from poolsvc.library.headers import Headers
from poolsvc.library.retry import Retry, retry_after
from poolsvc.library.routes import Router
from workers.shared.errors import ERROR_CLASSES, PHASES

DOC = Path(__file__).parents[2] / "docs" / "library.md"


def test_headers_are_case_insensitive_and_keep_every_value() -> None:
    h = Headers([("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2")])
    assert h["content-type"] == h["CONTENT-TYPE"] == "text/plain"
    assert h["set-cookie"] == "a=1, b=2" and h.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert "SET-COOKIE" in h and "x" not in h and len(h) == 2
    assert h.get("missing", "d") == "d" and h.get_list("missing") == []
    assert h.multi_items()[2] == ("set-cookie", "b=2")
    assert h == {"Content-Type": "text/plain", "set-cookie": "a=1, b=2"}
    with pytest.raises(KeyError):
        h["missing"]


def test_routes_split_once_and_render_with_the_services_renderer() -> None:
    r = Router({"X-Client": "1"}, "ua")
    key, target, host = r.route("https://Example.COM/a/b?q=1#frag")
    assert key == ("https", "example.com", 443) and target == "/a/b?q=1" and host == "example.com"
    assert r.route("http://[::1]:8080")[0:3:2] == (("http", "::1", 8080), "[::1]:8080")
    p = r.prepare("GET", "http://h:81/x", None, None, None)
    assert p.data == b"GET /x HTTP/1.1\r\nHost: h:81\r\nUser-Agent: ua\r\nX-Client: 1\r\n\r\n"
    assert r.prepare("GET", "http://h:81/x", None, None, None) is p  # rendered once
    q = r.prepare("POST", "http://h/", {"a": "b c"}, {"x-client": "2"}, "é")
    assert q.data.startswith(b"POST /?a=b+c HTTP/1.1\r\n") and b"x-client: 2\r\n" in q.data
    assert b"X-Client" not in q.data and q.data.endswith(b"Content-Length: 2\r\n\r\n\xc3\xa9")


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (("GET", "ftp://h/"), "url"),
        (("GET", "http:///x"), "url"),
        (("GET", "http://a:b@h/"), "url"),
        (("GET", "http://h:0/"), "url"),
        (("GET", "http://h:x/"), "url"),
        (("GET", "http://h/a b"), "url"),
        (("GET", "http://h h/"), "url"),
        (("G T", "http://h/"), "method"),
        (("CONNECT", "http://h/"), "method"),
    ],
)
def test_a_bad_url_or_method_names_its_key(call: tuple[str, str], key: str) -> None:
    with pytest.raises(ex.InvalidRequest) as info:
        Router({}, "").prepare(*call, None, None, None)
    assert info.value.key == key and info.value.phase == "request"
    assert info.value.culprit == "local" and isinstance(info.value, ValueError)


def test_bad_headers_and_bodies_name_their_key() -> None:
    r = Router({}, "")
    for headers in ({"A": "x\r\nB: y"}, {"Transfer-Encoding": "chunked"}, {"a": "1", "A": "2"}):
        with pytest.raises(ex.InvalidRequest) as info:
            r.prepare("GET", "http://h/", None, headers, None)
        assert info.value.key == "headers"
    with pytest.raises(ex.InvalidRequest) as info:
        r.prepare("POST", "http://h/", None, None, 12)  # type: ignore[arg-type]
    assert info.value.key == "body"
    with pytest.raises(ex.InvalidRequest):
        Router({"bad name": "v"}, "")


def test_retries_are_opt_in_idempotent_and_jittered() -> None:
    rng = random.Random(1)
    read = ex.error_for("read", "ECONNRESET")
    assert retry_after(Retry(), 0, "GET", read, None, rng) is None  # off by default
    policy = Retry(total=3, backoff_base=0.1, backoff_cap=0.3, statuses=frozenset({503}))
    delays = [retry_after(policy, n, "GET", read, None, rng) for n in range(4)]
    assert delays[3] is None and all(d is not None for d in delays[:3])
    assert all(0 <= d <= bound for d, bound in zip(delays[:3], (0.1, 0.2, 0.3), strict=True))  # type: ignore[operator]
    assert retry_after(policy, 0, "POST", read, None, rng) is None
    assert retry_after(policy, 0, "GET", ex.error_for("pool", "pool_timeout"), None, rng) is None
    assert retry_after(policy, 0, "GET", None, 503, rng) is not None
    assert retry_after(policy, 0, "GET", None, 500, rng) is None
    with pytest.raises(ValueError, match="total >= 0"):
        Retry(total=-1)


def test_every_error_name_and_phase_has_its_exception() -> None:
    for name in ERROR_CLASSES:
        for phase in PHASES:
            if phase == "injected":
                continue
            exc = ex.error_for(phase, name)
            assert isinstance(exc, poolsvc.ClientError) and (exc.name, exc.phase) == (name, phase)
            assert exc.culprit == ERROR_CLASSES[name]
    assert type(ex.error_for("connect", "connect_timeout")) is ex.ConnectTimeout
    assert type(ex.error_for("read", "early_eof")) is ex.RemoteProtocolError
    assert type(ex.error_for("pool", "pool_timeout")) is ex.PoolTimeout
    injected = ex.error_for("read", "ECONNRESET", injected=True)
    assert type(injected) is ex.ReadError and injected.phase == "injected"
    with pytest.raises(ValueError, match="not an error name"):
        ex.error_for("read", "no_such_name")


def test_exceptions_survive_pickling() -> None:
    for exc in (ex.error_for("tls", "tls_eof", "x", injected=True), ex.InvalidRequest("url", "u")):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), back.name, back.phase, str(back)) == (
            type(exc), exc.name, exc.phase, str(exc))  # fmt: skip


def test_the_exception_table_in_the_docs_is_the_codes() -> None:
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \| (.+) \|$", DOC.read_text(), re.M)
    documented = [
        (c, base, phase, re.findall(r"`([^`]+)`", names)) for c, base, phase, names in rows
    ]
    code = [(cls.__name__, cls.__mro__[1].__name__, phase, list(names))
            for cls, phase, names in ex.TABLE]  # fmt: skip
    assert documented == code
    for cls, _, _ in ex.TABLE:
        assert getattr(poolsvc, cls.__name__) is cls  # every one importable from poolsvc
