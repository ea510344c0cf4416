"""Targets as URLs, bodies from files, durations with units, and the TLS keys checked
before any load: each bad value a one-line ConfigError naming its key."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from poolsvc.config import keys, plan
from poolsvc.config import loader as config
from workers.shared.errors import ConfigError, tls_name

# URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "path", "tls"),
    [
        ("http://127.0.0.1:8080/health", "127.0.0.1", 8080, "/health", False),
        ("https://api.example/", "api.example", 443, "/", True),
        ("HTTP://api.example", "api.example", 80, "/", False),
        ("https://[::1]:8443/a/b?x=1&y", "::1", 8443, "/a/b?x=1&y", True),
        ("http://h.example:81?q", "h.example", 81, "/?q", False),
    ],
)
def test_a_url_gives_host_port_path_and_tls(
    url: str, host: str, port: int, path: str, tls: bool
) -> None:
    cfg = config.build({"url": url}, {})
    assert (cfg.host, cfg.port, cfg.path, cfg.tls) == (host, port, path, tls)


@pytest.mark.parametrize(
    ("values", "msg"),
    [
        ({"url": "ftp://h/"}, "url: the scheme must be http or https, not 'ftp'"),
        ({"url": "http:///x"}, "url: 'http:///x' has no host"),
        ({"url": "https://u:p@h/"}, "url: credentials in a URL are not sent"),
        ({"url": "http://h/#top"}, "url: a #fragment is never sent"),
        ({"url": "http://h:99999/"}, "url: Port out of range"),
        ({"url": "http://h_x/"}, "url: 'h_x' is not a host name"),
        ({"url": "http://h/", "host": "h"}, "url gives the host: give one or the other"),
        ({"url": "http://h/", "path": "/x"}, "url gives the path"),
        ({"url": "https://h/", "tls": False}, "url is https, but tls is false"),
        ({"url": "http://h/", "cacert": "ca.pem"}, "cacert is for TLS targets"),
        (
            {"targets": [{"url": "gopher://h/"}]},
            "targets[0]: url: the scheme must be http or https",
        ),
        ({"targets": [{"name": "x"}]}, "targets[0] needs a url, or host and port"),
        ({"body": "x", "body_file": "f"}, "give either body or body_file"),
        ({"url": "http://h/", "body_file": "/nonexistent/b"}, "body_file: cannot read"),
    ],
)
def test_url_and_body_errors_name_the_key(values: dict[str, object], msg: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(values, {})
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_each_target_may_be_a_url_of_its_own() -> None:
    cfg = config.build(
        {"targets": [{"url": "https://a.example:8443/x"}, {"url": "http://b.example/y"}]}, {}
    )
    run = plan.resolve(cfg, [("a.example", 8443), ("b.example", 80)], seed=1, n=1)
    a, b = (t.spec for t in run.targets)
    assert (a.path, a.tls is not None, a.default_port) == ("/x", True, 443)
    assert (b.path, b.tls, b.default_port) == ("/y", None, 80)


def test_a_body_file_is_sent_byte_for_byte(tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"\x00\xff{}\n")
    cfg = config.build({"url": "http://h.example/p", "body_file": str(body)}, {})
    run = plan.resolve(cfg, [("h.example", 80)], seed=1, n=1)
    assert run.targets[0].spec.body == b"\x00\xff{}\n"


@pytest.mark.parametrize(
    ("unit", "text", "value"),
    [
        ("s", "30", 30.0),
        ("s", "30s", 30.0),
        ("s", "2m", 120.0),
        ("s", "500ms", 0.5),
        ("s", "1h", 3600.0),
        ("ms", "250", 250),
        ("ms", "2s", 2000),
        ("ms", "1.5ms", 2),
        ("s", "0", 0.0),
    ],
)
def test_durations_take_a_unit_and_a_bare_number_is_the_keys_own(
    unit: str, text: str, value: float
) -> None:
    got = keys.duration_in(unit)(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "nan", "inf", "1e999"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        keys.duration_in("s")(text)


# The TLS keys --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    client = ca.issue_cert("client.example")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client-key.pem"))
    (d / "junk.pem").write_text("not a certificate\n")
    return {p.stem: str(p) for p in d.iterdir()}


@pytest.mark.parametrize(
    ("values", "msg"),
    [
        ({"tls_min": "1.1"}, "tls_min must be 1.2 or 1.3, not '1.1'"),
        ({"tls_min": "1.3", "tls_max": "1.2"}, "tls_min (1.3) is above tls_max (1.2)"),
        ({"cacert": "{junk}"}, "holds no PEM certificate"),
        ({"cacert": "/nonexistent/ca.pem"}, "cacert: cannot read /nonexistent/ca.pem"),
        ({"cert_key": "{client-key}"}, "cert_key (--key) needs cert (--cert)"),
        ({"cert": "{junk}"}, "cert: cannot load"),
        ({"tls_ciphers": "NO-SUCH-CIPHER"}, "tls_ciphers: no cipher matches"),
        ({"sni": "bad name"}, "sni: 'bad name' is not a host name"),
        ({"tls_resume_ratio": 1.5}, "tls_resume_ratio must be <= 1"),
    ],
)
def test_tls_errors_name_the_key(
    values: dict[str, object], msg: str, files: dict[str, str]
) -> None:
    filled = {k: v.format(**files) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(ConfigError) as info:
        config.build({"url": "https://h.example/", **filled}, {})
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_a_valid_tls_setup_resolves_into_the_spec(files: dict[str, str]) -> None:
    cfg = config.build(
        {
            "url": "https://h.example:8443/",
            "cacert": files["ca"],
            "cert": files["client"],
            "tls_min": "1.3",
            "tls_resume_ratio": 0.25,
            "connect_timeout_ms": 700,
        },
        {},
    )
    spec = plan.resolve(cfg, [("h.example", 8443)], seed=1, n=1).targets[0].spec.tls
    assert spec is not None
    assert (spec.sni, spec.verify, spec.min_version, spec.max_version) == (
        "h.example",
        True,
        "1.3",
        "1.3",
    )
    assert spec.resume_ratio == 0.25 and spec.handshake_timeout == 0.7
    assert spec.cadata is not None and "BEGIN CERTIFICATE" in spec.cadata


# Naming TLS failures ---------------------------------------------------------------------------


def _error(cls: type[ssl.SSLError], reason: str) -> ssl.SSLError:
    exc = cls(1, reason)
    exc.reason = reason  # as OpenSSL fills it in
    return exc


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (ssl.SSLCertVerificationError(1, "verify failed"), "tls_cert_verify_failed"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "tls_eof"),
        (_error(ssl.SSLError, "WRONG_VERSION_NUMBER"), "tls_protocol_version"),
        (_error(ssl.SSLError, "TLSV1_ALERT_PROTOCOL_VERSION"), "tls_protocol_version"),
        (_error(ssl.SSLError, "TLSV1_ALERT_UNKNOWN_CA"), "tls_alert_unknown_ca"),
        (_error(ssl.SSLError, "SSLV3_ALERT_HANDSHAKE_FAILURE"), "tls_alert_handshake_failure"),
        (
            _error(ssl.SSLError, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
            "tls_alert_certificate_required",
        ),
        (_error(ssl.SSLError, "TLSV1_ALERT_NO_SUCH_THING"), "tls_error"),
        (_error(ssl.SSLError, "BAD_SIGNATURE"), "tls_error"),
    ],
)
def test_tls_failures_have_names(exc: ssl.SSLError, name: str) -> None:
    assert tls_name(exc) == name
