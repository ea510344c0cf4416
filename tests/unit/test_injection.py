"""Injection decisions: gating by one draw, independence, determinism, encoding."""

import pytest

from poolsvc.config.keys import positive_duration as parse_duration
from workers.shared import shm
from workers.shared.admission import SharedView
from workers.shared.injection import Fault, Injector


def hits(inj: Injector, n: int = 2000, target: int = 0, now: float = 0.0) -> list[object]:
    return [inj.on_request(target, now) for _ in range(n)]


def test_probability_zero_never_hits_and_one_always_hits() -> None:
    assert set(hits(Injector([Fault("reset", 0.0)], 0))) == {None}
    assert set(hits(Injector([Fault("timeout", 1.0)], 0))) == {("timeout", 0)}
    conn = Injector([Fault("leak", 0.0), Fault("half_open", 1.0)], 0)
    assert conn.on_connection("leak", 0, 0.0) is None
    assert conn.on_connection("half_open", 0, 0.0) is not None


def test_rate_is_respected() -> None:
    got = hits(Injector([Fault("reset", 0.1, seed=3)], 0), n=20_000)
    assert 0.09 < sum(h is not None for h in got) / len(got) < 0.11


def test_same_seed_same_draws_and_workers_differ() -> None:
    a = hits(Injector([Fault("reset", 0.3, seed=42)], 0))
    b = hits(Injector([Fault("reset", 0.3, seed=42)], 0))
    c = hits(Injector([Fault("reset", 0.3, seed=42)], 1))
    assert a == b and a != c


def test_faults_with_one_seed_draw_independently() -> None:
    mixed = hits(Injector([Fault("reset", 0.5, seed=1), Fault("timeout", 0.5, seed=1)], 0))
    assert ("timeout", 0) in mixed  # not shadowed by an identical reset stream


def test_adding_a_fault_does_not_change_anothers_draws() -> None:
    alone = Injector([Fault("reset", 0.2, seed=5)], 0)
    with_other = Injector([Fault("reset", 0.2, seed=5), Fault("delay", 0.2, seed=9, param=5)], 0)
    draws_alone = [alone.on_request(0, 0.0) == ("reset", 0) for _ in range(500)]
    draws_with = [with_other.on_request(0, 0.0) == ("reset", 0) for _ in range(500)]
    assert draws_alone == draws_with  # reset is first in table order: wins whenever it hits


def test_target_filter_and_expiry() -> None:
    inj = Injector([Fault("reset", 1.0, target=1, until=10.0)], 0)
    assert inj.on_request(0, 1.0) is None
    assert inj.on_request(1, 1.0) == ("reset", 0)
    assert inj.on_request(1, 10.0) is None
    assert inj.expired(10.0) and not inj.expired(9.0)


def test_rebuilt_injector_keeps_the_stream_of_an_unchanged_fault() -> None:
    fault = Fault("reset", 0.5, seed=7)
    first = Injector([fault], 0)
    head = [first.on_request(0, 0.0) for _ in range(10)]
    second = Injector([fault, Fault("leak", 0.1)], 0, previous=first)
    tail = [second.on_request(0, 0.0) for _ in range(10)]
    fresh = Injector([fault], 0)
    assert head + tail == [fresh.on_request(0, 0.0) for _ in range(20)]


def test_encode_decode_round_trip() -> None:
    for fault in (Fault("delay", 0.25, 2, 123.5, 9, 250), Fault("connect_fail", 1.0, param=1)):
        assert Fault.decode(fault.encode()) == fault
    assert Fault.decode((0, 0, 0, 0, 0, 0)) is None


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"kind": "explode", "rate": 0.1}, "unknown fault"),
        ({"kind": "reset", "rate": 1.5}, "rate"),
        ({"kind": "delay", "rate": 0.1}, "delay_ms"),
    ],
)
def test_invalid_faults(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Fault(**kw)  # type: ignore[arg-type]


def test_parse_duration() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("3") == 3.0
    with pytest.raises(ValueError, match="positive"):
        parse_duration("0s")


def test_fault_table_seqlock_in_shared_memory() -> None:
    view = SharedView.private(1)
    faults = [Fault("reset", 0.1, seed=1), Fault("half_open", 0.5, target=0)]
    shm.write_faults(view.words, view.layout, faults)
    gen, got = view.read_faults()  # type: ignore[misc]
    assert got == faults and gen % 2 == 0
    view.words[shm.H_INJECT_GEN] += 1  # a writer in progress
    assert view.read_faults() is None
