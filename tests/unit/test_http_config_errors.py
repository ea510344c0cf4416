"""Request rendering and validation, response framing, config validation, errno names."""

import errno
import pathlib

import pytest

from poolsvc.config import loader as config
from poolsvc.metrics import outputs as files
from workers.net.httpwire import (
    RequestError,
    build_request,
    close_delimited,
    final_head,
    host_header,
    parse_statuses,
    status_table,
)
from workers.pool.target import check_host
from workers.shared.errors import ConfigError, ConnectError, errno_name, oserror_name


def test_request_bytes() -> None:
    assert build_request("GET", "/x", "h:1") == b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n"
    post = build_request("POST", "/", "h", {"X-A": "1"}, b"abc", keep_alive=False)
    assert post == (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    assert host_header("::1", 8080) == "[::1]:8080"
    assert host_header("a", 80) == "a"


def test_user_agent_host_and_content_length_are_ours_unless_given() -> None:
    ua = build_request("GET", "/", "h", user_agent="poolsvc/1")
    assert ua == b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: poolsvc/1\r\n\r\n"
    mine = build_request("GET", "/", "h", {"user-agent": "me"}, user_agent="poolsvc/1")
    assert mine.lower().count(b"user-agent") == 1 and b"user-agent: me\r\n" in mine
    # a user Host replaces ours: exactly one Host line goes out
    host = build_request("GET", "/", "127.0.0.1:80", {"Host": "example.com"})
    assert host == b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    # a Content-Length equal to the body is taken as is, never doubled
    same = build_request("POST", "/", "h", {"Content-Length": "3"}, b"abc")
    assert same.lower().count(b"content-length") == 1
    assert build_request("OPTIONS", "*", "h").startswith(b"OPTIONS * HTTP/1.1\r\n")
    assert build_request("GET", "/a%20b?q=1&r=/x:y@z", "h").startswith(b"GET /a%20b?q=1&r=/x:y@z ")


@pytest.mark.parametrize(
    ("method", "path", "headers", "key"),
    [
        ("G T", "/", {}, "method"),
        ("GET\n", "/", {}, "method"),  # `$` would have let the newline through
        ("CONNECT", "/", {}, "method"),
        ("GET", "x", {}, "path"),
        ("GET", "/a b", {}, "path"),
        *(("GET", f"/a{c}b", {}, "path") for c in "\t\x00\x7f\x0b\x0c\r\n#é"),
        ("GET", "/%zz", {}, "path"),
        ("GET", "*", {}, "path"),  # asterisk-form is for OPTIONS only
        ("GET", "/", {"A": "1\r\nB: 2"}, "headers"),
        ("GET", "/", {"X-Evil\n": "1"}, "headers"),
        ("GET", "/", {"A": "x\x00y"}, "headers"),
        ("GET", "/", {"A": "x\x7fy"}, "headers"),
        ("GET", "/", {"A": " padded"}, "headers"),
        ("GET", "/", {"A": "€"}, "headers"),  # not Latin-1
        ("GET", "/", {"Transfer-Encoding": "chunked"}, "headers"),
        ("POST", "/", {"Content-Length": "9"}, "headers"),  # contradicts the 3-byte body
        ("GET", "/", {"Accept": "a", "accept": "b"}, "headers"),
    ],
)
def test_request_rejects_what_must_not_go_on_the_wire(
    method: str, path: str, headers: dict[str, str], key: str
) -> None:
    with pytest.raises(RequestError) as info:
        build_request(method, path, "h", headers, b"abc")
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value)  # one line: the value is shown by its repr


def test_header_values_may_hold_tabs_and_spaces_inside() -> None:
    assert b"A: x \ty\r\n" in build_request("GET", "/", "h", {"A": "x \ty", "B": ""})


def test_close_delimited_and_the_final_header_block() -> None:
    assert close_delimited(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody")
    assert not close_delimited(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody")
    assert not close_delimited(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    # a header *value* mentioning content-length is not framing
    assert close_delimited(b"HTTP/1.1 200 OK\r\nX-Note: content-length: 1\r\n\r\n")
    # an interim response before the final one: the final one's headers decide
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert not close_delimited(interim)
    assert final_head(interim) == (25, len(interim) - 2)
    assert close_delimited(
        b"HTTP/1.1 103 Early\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    )
    assert final_head(b"HTTP/1.1 200 OK\r\nX: ") == (0, -1)


def test_success_statuses() -> None:
    table = status_table(parse_statuses("2xx, 304,401-403"))
    assert [c for c in range(600) if table[c]] == [*range(200, 300), 304, 401, 402, 403]
    for bad in ("6xx", "99", "200-700", "ok", "300-200"):
        with pytest.raises(RequestError, match="success_statuses"):
            parse_statuses(bad)


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("a-b.example.", "a-b.example."),
    ],
)
def test_hosts_accepted(host: str, shown: str) -> None:
    assert check_host(host) == shown


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("http://127.0.0.1:8080/p", "is a URL"),
        ("127.0.0.1:8080", "carries a port"),
        ("[127.0.0.1]", "only IPv6"),
        ("a b", "not a host name"),
        ("-a.example", "not a host name"),
        ("a\n", "not a host name"),
    ],
)
def test_hosts_refused_with_a_hint(host: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        check_host(host)


def test_config_defaults_and_overrides() -> None:
    cfg = config.build({"pool_size": 4, "read_timeout_ms": 10}, {"pool_size": 6, "seed": None})
    assert (cfg.pool_size, cfg.read_timeout_ms, cfg.effective_concurrency) == (6, 10, 6)
    assert cfg.effective_pool_min == 6
    assert config.build({"host": "[::1]", "port": 1}, {}).host == "::1"


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
        ({"path": "nope"}, "path: 'nope' must start with /"),
        ({"method": "GET\n"}, "method: 'GET\\n' is not an HTTP method"),
        ({"health_check_method": "HEAD\n"}, "health_check_method: 'HEAD\\n'"),
        ({"health_check_path": "/h\tx"}, "health_check_path: character '\\t'"),
        ({"headers": {"X-Evil\n": "1"}}, "headers: 'X-Evil\\n' is not a header name"),
        ({"headers": {"A": 1}}, "headers: must map names to strings"),
        (
            {"headers": {"Transfer-Encoding": "chunked"}, "body": "x"},
            "Transfer-Encoding is refused",
        ),
        ({"headers": {"Host": "a", "host": "b"}}, "'host' is given twice"),
        ({"host": "http://h:1/", "port": 1}, "host: 'http://h:1/' is a URL"),
        ({"success_statuses": "2xx,7"}, "success_statuses: '7'"),
        ({"max_header_bytes": 10}, "max_header_bytes must be >= 256"),
        (
            {"targets": [{"host": "127.0.0.1", "port": 1, "method": "GET\n"}]},
            "targets[0]: method: 'GET\\n'",
        ),
        ({"targets": [{"host": "h:80", "port": 1}]}, "targets[0]: host: 'h:80' carries a port"),
        ({"inject_failures": [{"fault": "explode"}]}, "fault must be one of reset"),
        ({"inject_failures": [{"rate": 0.1}]}, "inject_failures[0]: fault must be one of"),
        ({"inject_failures": [{"fault": "reset"}]}, "inject_failures[0]: rate is missing"),
        ({"inject_failures": [{"fault": "reset", "rate": 1, "x": 1}]}, "unknown key 'x'"),
        (
            {"inject_failures": [{"fault": "reset", "rate": 1, "delay_ms": 5}]},
            "delay_ms applies to delay, not to reset",
        ),
        ({"inject_failures": [{"fault": "reset", "rate": 2}]}, "rate must be within"),
        ({"backoff_base_ms": 10, "backoff_cap_ms": 5}, "backoff_cap_ms"),
        ({"duration_s": float("nan")}, "finite"),
        # a NUL byte in a path or a name: every system call refuses it (ValueError)
        ({"timeline": "a\x00b"}, "timeline must not contain a NUL byte"),
        ({"tls": True, "cacert": "\x00"}, "cacert must not contain a NUL byte"),
        ({"targets": [{"host": "h\x00", "port": 1}]}, "targets[0]: host must not contain"),
    ],
)
def test_config_errors_are_one_line(values: dict[str, object], msg: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(values, {})
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_config_file_errors(tmp_path: pathlib.Path) -> None:
    d = tmp_path
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


def test_a_body_may_hold_a_nul_byte_and_an_output_path_may_not(tmp_path: pathlib.Path) -> None:
    assert config.build({"body": "a\x00b", "method": "POST"}, {}).body == "a\x00b"
    with pytest.raises(ConfigError, match="a path cannot contain a NUL byte"):
        files.check_output(str(tmp_path / "a\x00b"), "--out")
