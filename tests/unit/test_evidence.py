"""Reading the churn study's evidence: pcap captures and ``ss`` output (pure parsing)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from poolsvc.churn import netns, pcap
from poolsvc.metrics import sockstats

CLIENT, TARGET = ("127.0.0.1", 40001), ("127.0.0.1", 8080)
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def frame(src: tuple[str, int], dst: tuple[str, int], flags: int, payload: bytes = b"") -> bytes:
    tcp = struct.pack(">HHIIBBHHH", src[1], dst[1], 0, 0, 5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0,
        bytes(map(int, src[0].split("."))), bytes(map(int, dst[0].split("."))),
    )  # fmt: skip
    return b"\0" * 12 + b"\x08\x00" + ip + tcp  # an Ethernet header, then IPv4


def write_pcap(
    path: Path, frames: list[tuple[float, bytes]], big: bool = False, nano: bool = False
) -> None:
    order = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for t, data in frames:
        frac = round((t % 1) * (1e9 if nano else 1e6))
        out += struct.pack(order + "IIII", int(t), frac, len(data), len(data)) + data
    path.write_bytes(out)


def exchange(t: float, client: tuple[str, int], requests: int) -> list[tuple[float, bytes]]:
    """A connection: handshake, ``requests`` request/response pairs, our FIN."""
    out = [
        (t, frame(client, TARGET, SYN)),
        (t + 0.00002, frame(TARGET, client, SYN | ACK)),
        (t + 0.00003, frame(client, TARGET, ACK)),
    ]
    for i in range(requests):
        at = t + 0.001 * (i + 1)
        out.append((at, frame(client, TARGET, PSH | ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")))
        out.append((at + 0.0001, frame(TARGET, client, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")))
    end = t + 0.001 * (requests + 1)
    out += [
        (end, frame(client, TARGET, FIN | ACK)),
        (end + 0.00001, frame(TARGET, client, FIN | ACK)),
    ]
    return out


@pytest.mark.parametrize(("big", "nano"), [(False, False), (True, False), (False, True)])
def test_a_capture_says_syns_per_request_round_trips_and_both_exchanges(
    tmp_path: Path, big: bool, nano: bool
) -> None:
    frames = exchange(100.0, CLIENT, 3) + exchange(100.5, ("127.0.0.1", 40002), 1)
    frames += exchange(101.0, CLIENT, 1)  # the same client port, used again: a new connection
    path = tmp_path / "c.pcap"
    write_pcap(path, frames, big, nano)
    study = pcap.study(pcap.read(path), TARGET[1])
    assert (study["connections"], study["syns"], study["requests"]) == (3, 3, 5)
    assert study["syns_per_request"] == 0.6
    assert study["handshake_rtt_us_p50"] == pytest.approx(20, abs=2)
    fresh, reused = study["fresh"], study["reused"]
    assert "[S  ]" in fresh[0] and "[SA ]" in fresh[1] and "GET / HTTP/1.1" in fresh[3]
    assert "HTTP/1.1 200 OK" in fresh[4]
    assert [line.split("[")[1][:3] for line in reused] == ["PA ", "PA "]  # no handshake


def test_what_is_not_a_pcap_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"not a capture at all, really not")
    with pytest.raises(ValueError, match="not a pcap"):
        pcap.read(bad)


SS = """\
ESTAB      0      0          127.0.0.1:40010    127.0.0.1:8080
TIME-WAIT  0      0          127.0.0.1:40011    127.0.0.1:8080
TIME-WAIT  0      0          127.0.0.1:40012    127.0.0.1:8080
TIME-WAIT  0      0          127.0.0.1:8080     127.0.0.1:39999
LISTEN     0      511        127.0.0.1:8080     0.0.0.0:*
SYN-SENT   0      1   [::ffff:127.0.0.1]:50000  127.0.0.1:8080
garbage line
"""


def test_ss_output_counts_each_side_and_the_ports_in_the_range() -> None:
    socks = sockstats.parse(SS)
    assert len(socks) == 6
    counts = sockstats.count(socks, ("127.0.0.1", 8080), (40000, 40999))
    assert counts == {"time_wait_ours": 2, "time_wait_theirs": 1, "ports_in_use": 3}


def test_the_namespace_says_why_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "needs root" in (netns.why_not() or "")


def test_the_study_client_writes_the_head_first_then_the_rest() -> None:
    from workers.net.transport import Plain, Tuned

    sent: list[bytes] = []

    class Sock:
        def send(self, data: object) -> int:
            chunk = bytes(data)  # type: ignore[call-overload]
            sent.append(chunk)
            return len(chunk)

        def recv(self, n: int) -> bytes:
            return b""

    send, _ = Tuned(Plain(), nodelay=False, split=True).streams(Sock())  # type: ignore[arg-type]
    request = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
    n = send(request)
    assert sent[0] == request[: request.index(b"\r\n\r\n") + 4] and n == len(sent[0])
    assert send(request[n:]) == 4 and sent[1] == b"body"
    plain_send, _ = Tuned(Plain(), nodelay=True, split=False).streams(Sock())  # type: ignore[arg-type]
    assert plain_send(request) == len(request)
