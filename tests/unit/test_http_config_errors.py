"""Request rendering, close-delimited detection, config validation, errno names."""

import errno

import pytest

from poolsvc import config
from workers.errors import ConfigError, ConnectError, errno_name, oserror_name
from workers.http import build_request, close_delimited, host_header


def test_request_bytes() -> None:
    assert build_request("GET", "/x", "h:1") == b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n"
    post = build_request("POST", "/", "h", {"X-A": "1"}, b"abc", keep_alive=False)
    assert post == (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    assert host_header("::1", 8080) == "[::1]:8080"
    assert host_header("a", 80) == "a"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [("G T", "/", {}), ("GET", "x", {}), ("GET", "/a b", {}), ("GET", "/", {"A": "1\r\nB: 2"})],
)
def test_request_rejects_injection(method: str, path: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        build_request(method, path, "h", headers)


def test_close_delimited() -> None:
    assert close_delimited(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody")
    assert not close_delimited(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody")
    assert not close_delimited(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    # a header *value* mentioning content-length is not framing
    assert close_delimited(b"HTTP/1.1 200 OK\r\nX-Note: content-length: 1\r\n\r\n")


def test_config_defaults_and_overrides() -> None:
    cfg = config.build({"pool_size": 4, "read_timeout_ms": 10}, {"pool_size": 6, "seed": None})
    assert (cfg.pool_size, cfg.read_timeout_ms, cfg.effective_concurrency) == (6, 10, 6)
    assert cfg.effective_pool_min == 6


@pytest.mark.parametrize(
    ("values", "msg"),
    [
        ({"pool_size": 0}, "pool_size must be >= 1"),
        ({"pool_size": True}, "pool_size must be int, not bool"),
        ({"port": 70000, "host": "h"}, "port must be <= 65535"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
        ({"host": "h"}, "host and port go together"),
        ({"exhaustion": "maybe"}, "exhaustion must be"),
        ({"duration_s": 0}, "needs a bound"),
        ({"pool_min": 20}, "pool_min (20) exceeds pool_size (10)"),
        ({"path": "nope"}, "invalid request path"),
        ({"headers": {"A": 1}}, "headers must map names to strings"),
        ({"inject_failures": [{"fault": "explode"}]}, "unknown fault 'explode'"),
        ({"inject_failures": [{"rate": 0.1}]}, "including 'fault'"),
        ({"inject_failures": [{"fault": "reset", "rate": 2}]}, "rate must be within"),
        ({"backoff_base_ms": 10, "backoff_cap_ms": 5}, "backoff_cap_ms"),
        ({"duration_s": float("nan")}, "finite"),
    ],
)
def test_config_errors_are_one_line(values: dict[str, object], msg: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(values, {})
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_config_file_errors(tmp_path: object) -> None:
    import pathlib

    d = pathlib.Path(str(tmp_path))
    (d / "bad.json").write_text("{nope")
    (d / "list.json").write_text("[1]")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load_file(str(d / "bad.json"))
    with pytest.raises(ConfigError, match="JSON object"):
        config.load_file(str(d / "list.json"))
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_file(str(d / "missing.json"))


def test_errno_names() -> None:
    assert errno_name(errno.ECONNREFUSED) == "ECONNREFUSED"
    assert errno_name(errno.EMFILE) == "EMFILE"
    assert errno_name(errno.EXDEV) == "EOTHER"  # not a socket error we track
    assert oserror_name(ConnectionResetError(errno.ECONNRESET, "x")) == "ECONNRESET"
    err = ConnectError("ECONNREFUSED", "127.0.0.1:9")
    assert (err.phase, err.culprit, str(err)) == ("connect", "remote", "ECONNREFUSED: 127.0.0.1:9")
    import pickle

    assert pickle.loads(pickle.dumps(err)).name == "ECONNREFUSED"
