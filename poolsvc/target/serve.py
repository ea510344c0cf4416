"""Embedded HTTP/1.1 target server that misbehaves on command, for real.

Theory of operation
-------------------
One asyncio process (stdlib loop, no uvloop) serves two loopback listeners:

* the *data port*: a hand-parsed HTTP/1.1 keep-alive server built on
  ``asyncio.Protocol`` (:mod:`poolsvc.target.dataconn`);
* the *control port*: newline-delimited JSON commands that change the shared
  misbehaviour modes, read the counters, or take the listener down and up
  (:mod:`poolsvc.target.steering`).

Both act on one shared :class:`~poolsvc.target.modes.Target`: modes, counters,
listener, connections (:mod:`poolsvc.target.modes`).  This module wires them
together (:func:`serve`) and is the process's entry point (:func:`main`).

``TargetServer`` (:mod:`poolsvc.target.launcher`) runs this module as a
subprocess (``python -m poolsvc.target``) and talks to its control port, in the
product's control protocol (:mod:`poolsvc.ctl.protocol`: one JSON request per line,
``{"id", "cmd", "args"}``; strict, with this server's own table of commands);
stdout carries exactly one ``LISTEN`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import ssl
import sys

from poolsvc.target.modes import Target
from poolsvc.target.steering import Control


def is_loopback(host: str) -> bool:
    """True only for a literal loopback IP (127.0.0.0/8 or ::1); names are refused."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _exit_with(parent: int, stop: asyncio.Event) -> None:
    """Stop when ``parent`` is gone: a SIGKILLed owner must not leave a server behind."""
    while os.getppid() == parent:
        await asyncio.sleep(0.2)
    stop.set()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The data port's TLS context: this certificate chain and key, TLS 1.2 and 1.3,
    ``http/1.1`` over ALPN, session tickets on (the default)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(
    host: str, port: int, control_port: int, parent: int = 0, tls: ssl.SSLContext | None = None
) -> None:
    """Listen, print the LISTEN line, serve until SIGTERM/SIGINT (or until ``parent``,
    if given, exits), then close everything. ``tls``: the data port speaks TLS."""
    target = Target(host, port, tls)
    await target.listen()
    control = await asyncio.start_server(
        Control(target).client, host, control_port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers go in before LISTEN is printed, so a stop() right after start() is clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTEN {target.port} {control.sockets[0].getsockname()[1]}", flush=True)
    watch = asyncio.create_task(_exit_with(parent, stop)) if parent else None
    await stop.wait()
    if watch is not None:
        watch.cancel()
    control.close()
    target.unlisten()
    await target.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poolsvc.target", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--parent", type=int, default=0, help="exit when this pid exits")
    parser.add_argument("--tls-cert", help="serve TLS on the data port: certificate chain (PEM)")
    parser.add_argument("--tls-key", help="... and its private key (PEM)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        print(f"target: --host {args.host!r} is not a loopback IP address", file=sys.stderr)
        return 2
    try:
        tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        asyncio.run(serve(args.host, args.port, args.control_port, args.parent, tls))
    except OSError as exc:
        print(f"target: {exc}", file=sys.stderr)
        return 1
    return 0
