"""A host's transport: the service's :class:`workers.net.transport.Plain` for ``http``,
its :class:`workers.net.tls.Tls` for ``https`` (verification on, SNI, ALPN http/1.1,
session resumption), made from the client's TLS options."""

from __future__ import annotations

import ssl
from pathlib import Path

from poolsvc.library.exceptions import InvalidRequest
from workers.net.tls import Tls, TlsSpec
from workers.net.transport import Plain, Transport


def tls_spec(host: str, verify: bool | str, cert: str | tuple[str, str] | None,
             resume: bool, handshake: float) -> TlsSpec:  # fmt: skip
    """``verify``: True (the system's CAs), False (no verification), or the path of a
    PEM file of CAs to trust; ``cert``: a client certificate file, or (cert, key)."""
    cadata = None
    if isinstance(verify, str):
        try:
            cadata = Path(verify).read_text()
        except (OSError, UnicodeError) as exc:
            raise InvalidRequest("verify", f"cannot read the CA file {verify!r}: {exc}") from None
    certfile, keyfile = (cert, None) if isinstance(cert, str) or cert is None else cert
    return TlsSpec(sni=host, verify=verify is not False, cadata=cadata, certfile=certfile,
                   keyfile=keyfile, resume_ratio=1.0 if resume else 0.0,
                   handshake_timeout=handshake)  # fmt: skip


def transport_for(key: tuple[str, str, int], verify: bool | str,
                  cert: str | tuple[str, str] | None, resume: bool,
                  handshake: float) -> Transport:  # fmt: skip
    """The transport of the host ``key``; raises InvalidRequest for unusable TLS options."""
    if key[0] == "http":
        return Plain()
    spec = tls_spec(key[1], verify, cert, resume, handshake)
    try:
        return Tls(spec)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise InvalidRequest("verify" if cert is None else "cert", str(exc)) from None
