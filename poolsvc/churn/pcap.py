"""Packets as evidence: read a capture of one churn half and say what it shows.

:func:`read` parses a classic pcap file (what ``tcpdump -w`` writes: microsecond
or nanosecond stamps, either byte order; Ethernet, Linux cooked v1/v2 links;
IPv4 TCP). :func:`study` finds, toward the target's port: the SYNs (one per new
connection) per request, the handshake round trips (SYN to SYN-ACK), and one
exchange of each kind, annotated: a request on a fresh connection (SYN, SYN-ACK,
ACK, request, response, FIN...) and one on a reused connection (request and
response only).
"""

from __future__ import annotations

import statistics
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_LINKS: Final = {1: 14, 113: 16, 276: 20}  # link type -> header length (Ethernet, SLL, SLL2)
_FLAGS: Final = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10))


@dataclass(frozen=True, slots=True)
class Packet:
    t: float  # seconds (capture clock)
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: int
    payload: bytes  # the first bytes of the TCP payload (as captured)
    length: int  # the TCP payload's whole length

    @property
    def flag_text(self) -> str:
        return "".join(name for name, bit in _FLAGS if self.flags & bit) or "."


def read(path: str | Path) -> list[Packet]:
    """The IPv4 TCP packets of a pcap file (ValueError if it is not one)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap file")
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\xa1\xb2\x3c\x4d": ">"}.get(magic)  # fmt: skip
    if order is None:
        raise ValueError(f"{path}: not a pcap file (magic {magic.hex()})")
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    link = struct.unpack(order + "I", data[20:24])[0]
    if link not in _LINKS:
        raise ValueError(f"{path}: link type {link} is not one we read")
    skip, out, at = _LINKS[link], [], 24
    while at + 16 <= len(data):
        sec, frac, caplen, _orig = struct.unpack(order + "IIII", data[at : at + 16])
        frame = data[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        packet = _tcp(frame[skip:], sec + frac * scale)
        if packet is not None:
            out.append(packet)
    return out


def _tcp(ip: bytes, t: float) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    sport, dport = struct.unpack(">HH", tcp[:4])
    offset = (tcp[12] >> 4) * 4
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    length = max(0, total - ihl - offset)
    return Packet(t, (src, sport), (dst, dport), tcp[13], tcp[offset:], length)


def _conns(packets: list[Packet], port: int) -> list[list[Packet]]:
    """Each connection to ``port``, its packets in order (a client port used again
    after a close starts a new connection at its SYN)."""
    live: dict[tuple[str, int], list[Packet]] = {}
    conns: list[list[Packet]] = []
    for p in packets:
        client = p.src if p.dst[1] == port else p.dst if p.src[1] == port else None
        if client is None:
            continue
        if (p.dst[1] == port and p.flags & 0x02 and not p.flags & 0x10) or client not in live:
            live[client] = []
            conns.append(live[client])
        live[client].append(p)
    return conns


def _line(p: Packet, t0: float, port: int) -> str:
    arrow = "client -> target" if p.dst[1] == port else "target -> client"
    what = p.payload.split(b"\r\n", 1)[0].decode("latin-1")[:40] if p.length else ""
    return f"{(p.t - t0) * 1000:9.3f} ms  {arrow}  [{p.flag_text:<3}] {p.length:>5} bytes  {what}"


def study(packets: list[Packet], port: int) -> dict[str, Any]:
    """What the capture of one half shows (see the module docstring)."""
    conns = _conns(packets, port)
    syns = sum(1 for p in packets if p.dst[1] == port and p.flags & 0x02 and not p.flags & 0x10)
    requests = sum(1 for p in packets if p.dst[1] == port and p.length)
    rtts = []
    for ps in conns:
        syn = next((p for p in ps if p.flags & 0x02 and not p.flags & 0x10), None)
        ack = next((p for p in ps if p.flags & 0x12 == 0x12), None)
        if syn is not None and ack is not None:
            rtts.append((ack.t - syn.t) * 1e6)
    fresh = [ps for ps in conns if ps[0].flags & 0x02 and _requests(ps, port)]
    reused = [ps for ps in conns if len(_requests(ps, port)) >= 2]
    return {
        "packets": len(packets),
        "connections": len(conns),
        "syns": syns,
        "requests": requests,
        "syns_per_request": round(syns / requests, 3) if requests else None,
        "handshake_rtt_us_p50": round(statistics.median(rtts), 1) if rtts else None,
        # from the middle of the run: not a warm-up connection that waited for the load
        "fresh": _fresh(fresh[len(fresh) // 2], port) if fresh else [],
        "reused": _reused(reused[len(reused) // 2], port) if reused else [],
    }


def _requests(ps: list[Packet], port: int) -> list[int]:
    return [i for i, p in enumerate(ps) if p.dst[1] == port and p.length]


def _fresh(ps: list[Packet], port: int) -> list[str]:
    """The handshake, the first request and its response, then the close."""
    sent = _requests(ps, port)
    answer = next((i for i in range(sent[0], len(ps)) if ps[i].src[1] == port and ps[i].length),
                  sent[0])  # fmt: skip
    head = ps[: answer + 2]
    lines = [_line(p, ps[0].t, port) for p in head]
    more = len(sent) - 1
    if more:
        lines.append(f"{'':>12}... {more} more requests on this connection ...")
    close = [p for p in ps[answer + 2 :] if p.flags & 0x05]
    if close:
        at = ps.index(close[0])
        lines += [_line(p, ps[0].t, port) for p in ps[at : at + 3]]
    return lines


def _reused(ps: list[Packet], port: int) -> list[str]:
    """A later request on a kept connection: the request, the response (and ACKs)."""
    second = _requests(ps, port)[1]
    answer = next((i for i in range(second, len(ps)) if ps[i].src[1] == port and ps[i].length),
                  second)  # fmt: skip
    return [_line(p, ps[second].t, port) for p in ps[second : answer + 1]]
