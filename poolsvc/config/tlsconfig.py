"""The TLS keys of a target's configuration: checked before any load, made into a TlsSpec.

Every file is read and every setting tried once here, in the control plane, so
that a bad one is a one-line ConfigError naming its key (exit 2), not a worker
failing at its first connect: the CA file must hold certificates, the client
certificate must load with its key, the cipher list must select a cipher, the
versions must be 1.2 or 1.3 and in order. TLS keys given for a plain target are
refused too: an operator who passes ``--cacert`` to an ``http`` URL meant
something else.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from poolsvc.config.keys import Config
from workers.net.tls import VERSIONS, TlsSpec
from workers.pool.target import check_host
from workers.shared.errors import ConfigError

#: keys that mean nothing without TLS (their defaults: None or False)
TLS_ONLY = ("cacert", "cert", "cert_key", "sni", "tls_ciphers", "insecure")


def _read(path: str, key: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a PEM text file"
        raise ConfigError(f"{key}: cannot read {path}: {why}") from None


def validate_tls(cfg: Config) -> None:
    """Raise ConfigError, naming the key, for a TLS setting that cannot work."""
    if not cfg.tls:
        for key in TLS_ONLY:
            if getattr(cfg, key):
                raise ConfigError(f"{key} is for TLS targets: use an https URL or --tls")
        return
    for key in ("tls_min", "tls_max"):
        if getattr(cfg, key) not in VERSIONS:
            raise ConfigError(f"{key} must be 1.2 or 1.3, not {getattr(cfg, key)!r}")
    if VERSIONS[cfg.tls_min] > VERSIONS[cfg.tls_max]:
        raise ConfigError(f"tls_min ({cfg.tls_min}) is above tls_max ({cfg.tls_max})")
    if cfg.sni is not None:
        try:
            check_host(cfg.sni)
        except ValueError as exc:
            raise ConfigError(f"sni: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.cacert:
        pem = _read(cfg.cacert, "cacert")
        try:
            ctx.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"cacert: {cfg.cacert} holds no PEM certificate") from None
    if cfg.cert_key and not cfg.cert:
        raise ConfigError("cert_key (--key) needs cert (--cert)")
    if cfg.cert:
        try:
            ctx.load_cert_chain(cfg.cert, cfg.cert_key)
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror if type(exc) is not ssl.SSLError and exc.strerror else str(exc)
            raise ConfigError(f"cert: cannot load {cfg.cert} with its key: {why}") from None
    if cfg.tls_ciphers:
        try:
            ctx.set_ciphers(cfg.tls_ciphers)
        except ssl.SSLError:
            raise ConfigError(f"tls_ciphers: no cipher matches {cfg.tls_ciphers!r}") from None


def tls_spec(cfg: Config, host: str, trust: str = "") -> TlsSpec | None:
    """How to speak TLS to ``host`` for ``cfg`` (None: plain TCP). ``trust``: the PEM of
    a CA trusted besides ``cacert`` (the embedded target's throwaway one)."""
    if not cfg.tls:
        return None
    cadata = (_read(cfg.cacert, "cacert") if cfg.cacert else "") + trust
    timeout_ms = cfg.tls_handshake_timeout_ms or cfg.connect_timeout_ms
    return TlsSpec(
        sni=cfg.sni or host,
        verify=not cfg.insecure,
        cadata=cadata or None,
        certfile=cfg.cert,
        keyfile=cfg.cert_key,
        min_version=cfg.tls_min,
        max_version=cfg.tls_max,
        ciphers=cfg.tls_ciphers,
        resume_ratio=cfg.tls_resume_ratio,
        handshake_timeout=timeout_ms / 1000.0,
    )
