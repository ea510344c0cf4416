"""HdrHistogram interval logs (``--hlog FILE``): the format wrk2 and the HdrHistogram
tools read, written one line per interval and per target as the run goes.

The file::

    #[Histogram log format version 1.3]
    #[StartTime: 1764493200.125 (seconds since epoch), 2026-11-30T09:00:00.125Z]
    #[BaseTime: 1764493200.125 (seconds since epoch)]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    Tag=api,0.000,1.000,0.012,HISTFAAAA...

Values are microseconds. Each line's histogram is the V2 encoding (ZigZag LEB128
counts with runs of zeros, zlib-compressed, base64) of an HdrHistogram with 3
significant digits over 1 us .. 2**32 us. Our own buckets are 1/64 of their value
wide (see :mod:`workers.shared.histogram`); each is written as its highest value, which an
HdrHistogram at 3 significant digits keeps apart from every other bucket's, so the
log holds exactly the counts we measured and every percentile read back from it
is ours to 3 significant digits. The interval's max is in seconds (the format's
default unit ratio for microsecond values is 1e6, as the reference writer uses).
"""

from __future__ import annotations

import base64
import math
import re
import struct
import time
import zlib
from collections.abc import Sequence
from typing import IO, Final

from poolsvc.metrics import outputs as files
from workers.shared import histogram
from workers.shared.slotstats import Snapshot

DIGITS: Final = 3
LOWEST: Final = 1
HIGHEST: Final = 2**32
_HALF_MAGNITUDE: Final = 10  # log2 of half the sub-buckets that 3 digits need (2048 / 2)
_MASK: Final = (1 << (_HALF_MAGNITUDE + 1)) - 1
_ENCODING: Final = 0x1C849303 | 0x10  # V2, 8-byte words
_COMPRESSED: Final = 0x1C849304 | 0x10
LEGEND: Final = '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'


def hdr_index(value: int) -> int:
    """The counts index of ``value`` in an HdrHistogram of 3 significant digits
    whose lowest discernible value is 1."""
    bucket = (value | _MASK).bit_length() - (_HALF_MAGNITUDE + 1)
    sub = value >> bucket
    return ((bucket + 1) << _HALF_MAGNITUDE) + sub - (1 << _HALF_MAGNITUDE)


def _zigzag(n: int) -> bytes:
    """``n`` as a ZigZag LEB128 varint (the 9th byte, when reached, holds 8 bits)."""
    u = ((n << 1) ^ (n >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    for _ in range(8):
        if u < 0x80:
            out.append(u)
            return bytes(out)
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def hdr_counts(counts: Sequence[int]) -> dict[int, int]:
    """Our buckets as HdrHistogram counts: index -> count (each bucket at its top)."""
    out: dict[int, int] = {}
    for i, n in enumerate(counts):
        if n:
            at = hdr_index(min(histogram.bucket_high(i), HIGHEST))
            out[at] = out.get(at, 0) + n
    return out


def encode(counts: Sequence[int]) -> str:
    """One histogram (our bucket counts) as the log's base64 compressed V2 encoding."""
    sparse = hdr_counts(counts)
    payload = bytearray()
    at = 0
    for index in sorted(sparse):
        if index > at:  # a run of zeros: one zero as 0, a longer run as -length
            payload += _zigzag(0 if index - at == 1 else -(index - at))
        payload += _zigzag(sparse[index])
        at = index + 1
    header = struct.pack(">iiiiqqd", _ENCODING, len(payload), 0, DIGITS, LOWEST, HIGHEST, 1.0)
    packed = zlib.compress(header + bytes(payload))
    return base64.b64encode(struct.pack(">ii", _COMPRESSED, len(packed)) + packed).decode()


def tag(name: str) -> str:
    """A target's name as a log tag (no comma, space or control character)."""
    return re.sub(r"[^A-Za-z0-9_.:/-]", "_", name) or "_"


class HlogWriter:
    """Writes the log to ``out`` as intervals come (the caller owns the file)."""

    def __init__(self, out: IO[str], start_wall: float) -> None:
        self.out = out
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_wall))
        millis = f"{start_wall % 1:.3f}"[1:]
        out.write("#[Histogram log format version 1.3]\n")
        out.write(f"#[StartTime: {start_wall:.3f} (seconds since epoch), {stamp}{millis}Z]\n")
        out.write(f"#[BaseTime: {start_wall:.3f} (seconds since epoch)]\n")  # stamps: relative
        out.write(LEGEND + "\n")
        out.flush()
        self.lines = 0

    def interval(
        self, name: str, start_s: float, length_s: float, counts: Sequence[int], max_us: int
    ) -> None:
        """One interval of one target: ``start_s`` since the run's start, its counts."""
        self.out.write(
            f"Tag={tag(name)},{start_s:.3f},{length_s:.3f},{max_us / 1e6:.6f},{encode(counts)}\n"
        )
        self.lines += 1

    def flush(self) -> None:
        self.out.flush()

    def __repr__(self) -> str:
        return f"<HlogWriter lines={self.lines}>"


class HlogFile:
    """``--hlog``: the log of a run, fed each second with each target's cumulative
    snapshot (:meth:`feed`); written to a private file renamed into place when the
    run ends, however it ends (nothing at all when ``path`` is None)."""

    def __init__(self, path: str | None, names: Sequence[str], start_wall: float) -> None:
        self.path, self.names, self.start_wall = path, list(names), start_wall
        self.out: files.Replacement | None = None
        self.writer: HlogWriter | None = None
        self._last = [[0] * histogram.BUCKETS for _ in names]
        self._last_t = 0.0

    def __enter__(self) -> HlogFile:
        if self.path:
            self.out = files.Replacement(self.path)
            self.writer = HlogWriter(self.out.file, self.start_wall)
        return self

    def feed(self, t: float, whole: Snapshot, owns: Sequence[Snapshot]) -> None:
        """``t``: seconds since the run started; ``owns``: each target's totals."""
        if self.writer is None or t <= self._last_t:
            return
        for i, (name, own) in enumerate(zip(self.names, owns, strict=True)):
            diff = [a - b for a, b in zip(own.hist, self._last[i], strict=True)]
            top = max((k for k, n in enumerate(diff) if n), default=-1)
            max_us = (
                min(histogram.bucket_high(top), own.counters["latency.max_us"]) if top >= 0 else 0
            )
            self.writer.interval(name, self._last_t, t - self._last_t, diff, max_us)
            self._last[i] = list(own.hist)
        self._last_t = t
        self.writer.flush()

    def __exit__(self, *exc: object) -> None:
        if self.out is not None:
            self.out.commit()  # what was recorded is true, even of a run that failed


def _value_of(index: int) -> int:
    """The lowest value an HdrHistogram counts index (3 digits, lowest 1) stands for."""
    bucket = (index >> _HALF_MAGNITUDE) - 1
    sub = (index & ((1 << _HALF_MAGNITUDE) - 1)) + (1 << _HALF_MAGNITUDE)
    if bucket < 0:
        bucket, sub = 0, sub - (1 << _HALF_MAGNITUDE)
    return sub << bucket


def decode(text: str) -> list[int]:
    """One of our encoded histograms back as our bucket counts (the inverse of
    :func:`encode`: each HdrHistogram bucket lies inside one of ours)."""
    raw = base64.b64decode(text)
    cookie, length = struct.unpack(">ii", raw[:8])
    if cookie != _COMPRESSED or length != len(raw) - 8:
        raise ValueError("not a V2 compressed histogram")
    data = zlib.decompress(raw[8:])
    cookie, size = struct.unpack(">ii", data[:8])
    if cookie != _ENCODING:
        raise ValueError("not a V2 histogram")
    counts = [0] * histogram.BUCKETS
    at, pos, end = 0, 40, 40 + size
    while pos < end:
        value, shift = 0, 0
        for i in range(9):
            byte = data[pos]
            pos += 1
            value |= (byte if i == 8 else byte & 0x7F) << shift
            shift += 7
            if i < 8 and not byte & 0x80:
                break
        n = (value >> 1) ^ -(value & 1)
        if n < 0:
            at += -n
            continue
        if n:
            counts[histogram.bucket_of(_value_of(at))] += n
        at += 1
    return counts


def read_log(path: str) -> tuple[float, list[tuple[str, float, float, list[int]]]]:
    """A log of ours: its start (epoch seconds) and its lines (tag, start, length, counts)."""
    start, lines = 0.0, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#[StartTime:"):
                start = float(line.split()[1])
            elif line.startswith("Tag="):
                tag_part, offset, length, _max, payload = line.rstrip("\n").split(",")
                lines.append((tag_part[4:], float(offset), float(length), decode(payload)))
    return start, lines


def merge_logs(paths: Sequence[str], out_path: str) -> int:
    """The logs of one run's shards as one: every line re-binned on the wall clock
    into whole seconds from the earliest start, per tag (counts exact); the lines."""
    logs = [read_log(p) for p in paths]
    origin = math.floor(min(start for start, _ in logs))
    bins: dict[tuple[str, int], list[int]] = {}
    for start, lines in logs:
        for tag_name, offset, length, counts in lines:
            key = (tag_name, int(start + offset + length / 2 - origin))
            merged = bins.setdefault(key, [0] * histogram.BUCKETS)
            histogram.merge_into(merged, counts)
    with files.replacing(out_path) as out:
        writer = HlogWriter(out, float(origin))
        for (tag_name, second), counts in sorted(bins.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            top = max((i for i, n in enumerate(counts) if n), default=-1)
            writer.interval(
                tag_name, float(second), 1.0, counts, histogram.bucket_high(top) if top >= 0 else 0
            )
    return len(bins)
