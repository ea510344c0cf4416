"""TLS: the second transport, the settings it is made from, and its session policy.

A :class:`Tls` transport opens and connects a TCP socket as :class:`Plain` does,
then wraps it (``SSLContext.wrap_socket``, the handshake not done on connect) and
drives the handshake without blocking: :meth:`Tls.handshake` says whether it
waits to read or to write, and the dialer watches the socket for that. The
request path does not change: it reads and writes through the streams the
transport hands each connection, which turn OpenSSL's "want read"/"want write"
into ``BlockingIOError`` (a write is then retried with the same bytes, as
OpenSSL requires) and drain what OpenSSL has already decrypted (``pending()``)
without waiting for epoll.

Verification is on by default (the system's CAs, or ``cadata``); renegotiation
is refused (``OP_NO_RENEGOTIATION``), so after the handshake a write never needs
a read. ALPN offers ``http/1.1``. ``SSLKEYLOGFILE`` is honoured (the context is
made by ``ssl.create_default_context``).

Sessions: each connection's session is kept after its first response (by then a
TLS 1.3 ticket has arrived), and a new connection offers the latest one for a
fraction ``resume_ratio`` of connects, spread evenly (the k-th connect offers one
when ``floor((k+1) r) > floor(k r)``): a ratio of 0 makes every handshake full,
1 resumes whenever the server allows.
"""

from __future__ import annotations

import math
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final

from workers.net.transport import Plain, Recv, Send

VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
WANT_READ: Final = 1  # Tls.handshake: not done, waiting for bytes from the peer
WANT_WRITE: Final = 2  # ... waiting for room to write
_WANT: Final = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_PEEK: Final = socket.MSG_PEEK | socket.MSG_DONTWAIT


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """How to speak TLS to one target (plain data, made by the control plane)."""

    sni: str | None  # the name sent and verified (None: the host is an IP literal, no SNI)
    verify: bool = True
    cadata: str | None = None  # PEM of the CAs to trust; None: the system's
    certfile: str | None = None  # a client certificate, and its key
    keyfile: str | None = None
    min_version: str = "1.2"
    max_version: str = "1.3"
    ciphers: str | None = None  # OpenSSL list, TLS 1.2 only
    resume_ratio: float = 1.0
    handshake_timeout: float = 1.0  # seconds


def make_context(spec: TlsSpec) -> ssl.SSLContext:
    """The client context for ``spec``; raises ssl.SSLError, OSError or ValueError
    (the control plane makes one first, to name a bad setting before any load)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=spec.cadata)
    if not spec.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = VERSIONS[spec.min_version]
    ctx.maximum_version = VERSIONS[spec.max_version]
    if spec.ciphers:
        ctx.set_ciphers(spec.ciphers)
    if spec.certfile:
        ctx.load_cert_chain(spec.certfile, spec.keyfile)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def handshake_blocking(spec: TlsSpec, sock: socket.socket, timeout: float) -> ssl.SSLSocket:
    """One TLS handshake over the connected ``sock``, with a deadline (the pre-flight);
    the caller owns the returned socket. Raises ssl.SSLError, or TimeoutError."""
    sock.settimeout(timeout)
    tls = make_context(spec).wrap_socket(sock, server_hostname=spec.sni)  # handshakes now
    tls.settimeout(None)
    return tls


class Tls:
    """TLS over TCP to one target (see the module docstring); the TCP part is a
    :class:`Plain` transport's. ``offered`` counts the sessions offered."""

    name = "tls"
    handshakes = True

    def __init__(self, spec: TlsSpec) -> None:
        self.tcp = Plain()
        self.spec = spec
        self.ctx = make_context(spec)
        self.session: ssl.SSLSession | None = None  # the latest resumable one
        self.connects = 0  # wrapped so far: the k of the resume schedule
        self.offered = 0
        self._abortive: set[int] = set()  # fds to close with RST, without close_notify

    def open(self, family: int) -> socket.socket:
        return self.tcp.open(family)

    def connect(self, sock: socket.socket, addr: tuple[Any, ...]) -> int:
        return self.tcp.connect(sock, addr)

    def connected(self, sock: socket.socket) -> int:
        """The TCP handshake's result (the TLS one follows: :meth:`handshake`)."""
        return self.tcp.connected(sock)

    def wrap(self, sock: socket.socket) -> tuple[socket.socket, bool]:
        """The TLS socket over the connected ``sock`` (which it replaces), offering the
        saved session when the resume schedule says so; and whether it does."""
        k, ratio = self.connects, self.spec.resume_ratio
        self.connects = k + 1
        offer = self.session is not None and math.floor((k + 1) * ratio) > math.floor(k * ratio)
        self.offered += offer
        tls = self.ctx.wrap_socket(
            sock,
            server_hostname=self.spec.sni,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=True,  # an EOF reads as b'': HTTP's framing judges it
            session=self.session if offer else None,
        )
        return tls, offer

    def handshake(self, sock: Any) -> int:
        """One step: 0 when done, else WANT_READ or WANT_WRITE; raises ssl.SSLError or
        OSError when the handshake fails."""
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return WANT_READ
        except ssl.SSLWantWriteError:
            return WANT_WRITE
        return 0

    def streams(self, sock: socket.socket) -> tuple[Send, Recv]:
        tls: Any = sock
        # Speed: the C object under the SSLSocket (``_sslobj``, there since Python 3.5)
        # is called directly, which skips two Python frames per read and per write
        # (``SSLSocket.recv`` -> ``read``); what those frames did is done here: an EOF
        # without close_notify reads as b'' (suppress_ragged_eofs).
        obj = getattr(tls, "_sslobj", None) or tls
        write, read, pending = obj.write, obj.read, obj.pending
        kept = [False]  # this connection's session is saved (after its first response)

        def send(data: Any) -> int:
            try:
                return int(write(data))
            except _WANT:  # retried later with the same bytes, as OpenSSL requires
                raise BlockingIOError from None

        def recv(size: int) -> bytes:
            try:
                data: bytes = read(size)
            except _WANT:  # only a record in part, or a post-handshake message (a ticket)
                raise BlockingIOError from None
            except ssl.SSLEOFError:
                return b""
            if data:
                while pending():  # already decrypted: epoll would not say so
                    data += read(size)
                if not kept[0]:
                    kept[0] = True
                    self.keep(tls)
            return data

        return send, recv

    def keep(self, sock: Any) -> None:
        """Save ``sock``'s session for later connections, if it can be resumed."""
        session = sock.session
        if session is not None and (session.has_ticket or session.id):
            self.session = session

    def probe(self, sock: socket.socket) -> str:
        """As :meth:`Plain.probe`, over TLS: an SSL socket cannot peek, so the raw one is
        peeked, and bytes found are read through TLS: a post-handshake record (a ticket)
        leaves the connection usable, a close_notify or an EOF evicts it (validation),
        application data nobody asked for too (unsolicited)."""
        try:
            peeked = socket.socket.recv(sock, 1, _PEEK)
        except BlockingIOError:
            return ""
        except OSError:
            return "validation"
        if not peeked:
            return "validation"
        try:
            data = sock.recv(4096)
        except _WANT:
            return ""
        except OSError:
            return "validation"
        return "unsolicited" if data else "validation"

    def reset(self, sock: socket.socket) -> None:
        self._abortive.add(sock.fileno())
        self.tcp.reset(sock)

    def shut(self, sock: socket.socket) -> None:
        """FIN both ways, the TLS object kept (``SSLSocket.shutdown`` would drop it)."""
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, sock: socket.socket, notify: bool = False) -> None:
        """Close; with ``notify`` (we end it, the peer has not), send close_notify first.
        Not after the peer closed or failed: a close_notify to a closed socket draws an
        RST, which ends the peer's TIME_WAIT early and hides what churn costs. Never on
        an aborted one (the reset fault)."""
        fd = sock.fileno()
        if fd in self._abortive:
            self._abortive.discard(fd)
        elif notify and isinstance(sock, ssl.SSLSocket):
            try:
                sock.unwrap()  # sends close_notify; the peer's reply is not waited for
            except (OSError, ValueError):
                pass
        elif isinstance(sock, ssl.SSLSocket):
            # The peer closed: read its close_notify, if it came. Left unread, those bytes
            # would make the kernel answer our close with an RST instead of a FIN.
            try:
                sock.recv(4096)
            except (OSError, ValueError):  # (SSLWantReadError included: nothing came)
                pass
        sock.close()

    def __repr__(self) -> str:
        return (
            f"<Transport tls sni={self.spec.sni} resume={self.spec.resume_ratio:g} "
            f"connects={self.connects} offered={self.offered}>"
        )
