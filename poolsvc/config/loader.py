"""Run configuration: checked and merged from a JSON file and the command line.

The keys, their types, ranges and defaults are one table, :mod:`poolsvc.config.keys`. A
file may hold any subset, command-line flags override it, and anything unknown or
out of range is a :class:`ConfigError` whose message fits on one line and names
the key (the CLI exits 2 with it). Times are in milliseconds in the file
(``*_ms``) except ``duration_s``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from poolsvc.config.keys import KEYS, Config
from poolsvc.config.tlsconfig import TLS_ONLY, tls_spec, validate_tls
from workers.net.httpwire import RequestError, build_request, parse_statuses
from workers.pool.target import TargetSpec, check_host
from workers.shared.errors import ConfigError
from workers.shared.injection import DEFAULT_MIX, Fault, parse_fault

#: String keys whose value may hold any character (the request body is data).
BINARY_KEYS: Final = frozenset({"body"})


def _check(key: str, value: Any) -> Any:
    if key not in KEYS:
        raise ConfigError(f"unknown config key {key!r}")
    types, low, high = KEYS[key]
    # bool is an int in Python; a JSON true must not pass as a pool size.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{key} must be {names}, not {type(value).__name__}")
    if isinstance(value, int | float):
        _check_range(key, value, low, high)
    if isinstance(value, str) and "\x00" in value and key not in BINARY_KEYS:
        # a path, an address, a name: no system call takes a NUL byte in one
        raise ConfigError(f"{key} must not contain a NUL byte")
    if key == "host" and isinstance(value, str):
        try:
            return check_host(value)
        except ValueError as exc:
            raise ConfigError(f"host: {exc}") from None
    return value


def _check_range(key: str, value: float, low: float | None, high: float | None) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be >= {low:g}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {high:g}, got {value}")


def load_file(path: str) -> dict[str, Any]:
    """Read a JSON config file into a dict (raises ConfigError on any problem)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    return data


def build(file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> Config:
    """Merge file values and (non-None) overrides, validate, and return a Config."""
    merged = {k: _check(k, v) for k, v in file_values.items()}
    merged.update({k: _check(k, v) for k, v in overrides.items() if v is not None})
    apply_url(merged, "url")
    if merged.get("body_file") is not None and merged.get("body"):
        raise ConfigError("give either body or body_file, not both")
    cfg = Config(**merged)
    _validate(cfg)
    return cfg


def split_url(url: str, key: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an ``http`` or ``https`` URL; ConfigError naming
    ``key`` for anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{key}: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConfigError(f"{key}: {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: credentials in a URL are not sent; use --header Authorization")
    if parts.fragment:
        raise ConfigError(f"{key}: a #fragment is never sent; drop it")
    try:
        host = check_host(parts.hostname)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), path


def apply_url(values: dict[str, Any], key: str) -> None:
    """Replace a ``url`` in ``values`` by the host, port, path and tls it says (one
    place gives each: a url with a host, a port or a path too is an error)."""
    url = values.get("url")
    if url is None:
        return
    for given in ("host", "port", "path"):
        if values.get(given) is not None:
            raise ConfigError(f"{key} gives the {given}: give one or the other")
    scheme, values["host"], values["port"], values["path"] = split_url(url, key)
    tls = scheme == "https"
    if values.get("tls") is not None and values["tls"] != tls:
        raise ConfigError(f"{key} is {scheme}, but tls is {str(values['tls']).lower()}")
    values["tls"] = tls


def read_body(path: str) -> bytes:
    """The request body, the bytes of ``path`` as they are."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"body_file: cannot read {path}: {exc.strerror}") from None


def _validate(cfg: Config) -> None:
    if (cfg.host is None) != (cfg.port is None):
        raise ConfigError("host and port go together (omit both to use the embedded target)")
    if cfg.targets is not None:
        _validate_targets(cfg)
        return
    if cfg.pool_min is not None and cfg.pool_min > cfg.pool_size:
        raise ConfigError(f"pool_min ({cfg.pool_min}) exceeds pool_size ({cfg.pool_size})")
    if cfg.exhaustion not in ("wait", "fail"):
        raise ConfigError(f"exhaustion must be 'wait' or 'fail', got {cfg.exhaustion!r}")
    if cfg.backoff_cap_ms < cfg.backoff_base_ms:
        raise ConfigError("backoff_cap_ms must be >= backoff_base_ms")
    if cfg.breaker_open_max_ms < cfg.breaker_open_ms:
        raise ConfigError("breaker_open_max_ms must be >= breaker_open_ms")
    if not cfg.duration_s and not cfg.requests:
        raise ConfigError("a run needs a bound: duration_s > 0 or requests > 0")
    validate_tls(cfg)
    faults(cfg, seed=0)  # raises ConfigError on a bad fault list
    try:
        request = target_spec(cfg, "h", 80)  # every field as the workers will send it
        build_request(
            request.method, request.path, "h", request.headers, request.body, request.keep_alive
        )
        host = {k: v for k, v in request.headers.items() if k.lower() == "host"}
        keys = ("health_check_method", "health_check_path", "headers")
        build_request(request.health_method, request.health_path, "h", host, keys=keys)
        parse_statuses(cfg.success_statuses)
    except RequestError as exc:
        raise ConfigError(str(exc)) from None


def faults(cfg: Config, seed: int) -> list[Fault]:
    """The faults ``inject_failures`` asks for: ``true`` is the default mix (a few
    percent of requests reset or time out), a list gives each fault (parsed by
    :func:`workers.shared.injection.parse_fault`, as a control request is; ``for_s``
    counts from now)."""
    value = cfg.inject_failures
    if value is False:
        return []
    if value is True:
        return [Fault(kind, rate, seed=seed, param=param) for kind, rate, param in DEFAULT_MIX]
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"inject_failures[{i}] must be an object")
        try:
            out.append(parse_fault(item, time.monotonic(), seed))
        except ValueError as exc:
            raise ConfigError(f"inject_failures[{i}]: {exc}") from None
    return out


#: keys a target entry may set for itself; everything else comes from the top level
TARGET_KEYS = {
    "host",
    "port",
    "name",
    "weight",
    "method",
    "path",
    "headers",
    "body",
    "keep_alive",
    "pool_size",
    "pool_min",
    "idle_timeout_ms",
    "max_age_ms",
    "max_requests_per_conn",
    "validate_after_ms",
    "health_check_after_ms",
    "health_check_method",
    "health_check_path",
    "exhaustion",
    "pool_wait_timeout_ms",
    "url",
    "tls",
    "tls_min",
    "tls_max",
    "tls_resume_ratio",
    "tls_handshake_timeout_ms",
    *TLS_ONLY,
}


def _validate_targets(cfg: Config) -> None:
    assert cfg.targets is not None
    if cfg.host is not None:
        raise ConfigError("give either host/port or targets, not both")
    if not 1 <= len(cfg.targets) <= 64:
        raise ConfigError("targets must list between 1 and 64 targets")
    for i, entry in enumerate(cfg.targets):
        if not isinstance(entry, dict):
            raise ConfigError(f"targets[{i}] must be an object")
        unknown = set(entry) - TARGET_KEYS
        if unknown:
            raise ConfigError(f"targets[{i}]: unknown key {sorted(unknown)[0]!r}")
        if "url" not in entry and ("host" not in entry or "port" not in entry):
            raise ConfigError(f"targets[{i}] needs a url, or host and port")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
            raise ConfigError(f"targets[{i}].weight must be an integer from 1 to 1000")
        name = entry.get("name", "")
        if not isinstance(name, str) or not name.isprintable() or len(name) > 100:
            raise ConfigError(f"targets[{i}].name must be printable text of 100 characters at most")
        try:
            one = target_config(cfg, i)
            _validate(one)
        except ConfigError as exc:
            raise ConfigError(f"targets[{i}]: {exc}") from None


def target_config(cfg: Config, i: int) -> Config:
    """The configuration of target ``i``: the top level with that entry's keys applied."""
    assert cfg.targets is not None
    entry = {k: v for k, v in cfg.targets[i].items() if k not in ("name", "weight")}
    checked = {k: _check(k, v) for k, v in entry.items()}
    apply_url(checked, "url")
    return dataclasses.replace(cfg, targets=None, **checked)


def target_configs(cfg: Config) -> list[Config]:
    """One Config per target (a single-target run is its own only target)."""
    if cfg.targets is None:
        return [cfg]
    return [target_config(cfg, i) for i in range(len(cfg.targets))]


def target_spec(
    cfg: Config, host: str, port: int, user_agent: str = "", trust: str = ""
) -> TargetSpec:
    """What a worker sends to ``host:port`` for ``cfg`` (one target's configuration);
    ``trust``: a CA trusted besides ``cacert`` (the embedded target's)."""
    headers = cfg.headers or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError("headers: must map names to strings")
    return TargetSpec(
        host=host,
        port=port,
        method=cfg.method,
        path=cfg.path,
        headers=dict(headers),
        body=read_body(cfg.body_file) if cfg.body_file else cfg.body.encode(),
        keep_alive=cfg.keep_alive,
        health_method=cfg.health_check_method,
        health_path=cfg.health_check_path,
        user_agent=user_agent,
        tls=tls_spec(cfg, host, trust),
        nodelay=cfg.tcp_nodelay,
        split_writes=cfg.split_writes,
    )


def target_weights(cfg: Config) -> list[int]:
    if cfg.targets is None:
        return [1]
    return [int(entry.get("weight", 1)) for entry in cfg.targets]


def parse_addr(text: str, key: str = "metrics_addr") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free one); ConfigError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key} must be HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    return host, int(port)
