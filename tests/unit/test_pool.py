"""Pool shard decisions, driven with explicit times (no sockets, no sleeping)."""

import random

import pytest

from workers.pool import shard as pl
from workers.pool.backoff import Backoff


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.created = self.last_used = self.expires = 0.0
        self.requests = 0

    def __repr__(self) -> str:
        return self.name


def make(now: float = 0.0, n_idle: int = 0, **kw: object) -> pl.Pool[FakeConn, str]:
    settings = pl.PoolSettings(**{"max_size": 3, "validate_after": 0.5, **kw})  # type: ignore[arg-type]
    pool: pl.Pool[FakeConn, str] = pl.Pool(settings, Backoff(0.1, 1.0, random.Random(1)))
    for _ in range(n_idle):
        assert pool.reserve_connect()
    for i in range(n_idle):
        assert pool.connected(FakeConn(f"c{i}"), now, owned=False) is None
    return pool


def test_empty_pool_connects_until_full_then_waits() -> None:
    pool = make()
    assert [pool.checkout(0.0, f"w{i}") for i in range(3)] == [pl.CONNECT] * 3
    assert pool.checkout(0.0, "w3") == pl.Wait(until=1.0)
    assert pool.gauges() == (0, 0, 3, 1)


def test_fail_policy_fails_fast_when_full() -> None:
    pool = make(exhaustion="fail")
    for _ in range(3):
        pool.checkout(0.0, "w")
    assert pool.checkout(0.0, "w") is pl.EXHAUSTED
    assert not pool.waiters


def test_idle_is_lifo_and_recent_use_skips_the_probe() -> None:
    pool = make(n_idle=2)
    act = pool.checkout(0.1, "w")
    assert isinstance(act, pl.Use) and act.conn.name == "c1"
    assert pool.gauges() == (1, 1, 0, 0)


def test_probe_after_validate_after_and_health_check_after_health_after() -> None:
    pool = make(n_idle=1, health_after=5.0)
    conn = pool.idle[0]
    assert pool.checkout(0.6, "w") == pl.Probe(conn)
    pool.release(pool.in_use.pop())
    pool.idle[0].last_used = 0.0
    assert isinstance(pool.checkout(5.0, "w"), pl.Health)


def test_idle_timeout_evicts_at_checkout_and_in_sweep() -> None:
    pool = make(n_idle=2, idle_timeout=10.0)
    pool.idle[0].last_used = 5.0  # c0, the cold end; c1 (the LIFO top) last used at 0.0
    act = pool.checkout(12.0, "w")
    assert isinstance(act, pl.Evict) and act.reason == "idle_timeout"
    assert act.conn not in pool.in_use and act.conn not in pool.idle
    assert act.conn.name == "c1"
    assert [(c.name, r) for c, r in pool.sweep(12.0)] == []  # c0 (used at 5.0) is not expired
    assert [(c.name, r) for c, r in pool.sweep(15.0)] == [("c0", "idle_timeout")]
    assert pool.size == 0


def test_max_age_with_jitter_retires_on_checkin() -> None:
    pool = make(max_age=100.0)
    pool.checkout(0.0, "w")
    conn = FakeConn("c")
    pool.connected(conn, 0.0, owned=True, jitter=1.0)
    assert conn.expires == pytest.approx(97.5)  # 2.5 % early at most
    assert pool.checkin(conn, 97.6, keep_alive=True) == pl.Close("max_age")


def test_request_budget_retires() -> None:
    pool = make(max_requests=2)
    pool.checkout(0.0, "w")
    conn = FakeConn("c")
    pool.connected(conn, 0.0, owned=True)
    conn.requests = 2
    assert pool.checkin(conn, 1.0, keep_alive=True) == pl.Close("max_age")


def test_checkin_hands_off_to_first_waiter_fifo() -> None:
    pool = make(max_size=1)
    pool.checkout(0.0, "a")
    conn = FakeConn("c")
    pool.connected(conn, 0.0, owned=True)
    pool.checkout(0.0, "b")
    pool.checkout(0.0, "c")
    assert pool.checkin(conn, 1.0, keep_alive=True) == pl.Handoff("b")
    assert conn in pool.in_use and list(pool.waiters) == ["c"]
    pool.waiters.clear()
    assert pool.checkin(conn, 2.0, keep_alive=True) is pl.IDLE and list(pool.idle) == [conn]


def test_server_close_frees_a_slot_for_a_waiter() -> None:
    pool = make(max_size=1)
    pool.checkout(0.0, "a")
    conn = FakeConn("c")
    pool.connected(conn, 0.0, owned=True)
    pool.checkout(0.0, "b")
    assert pool.checkin(conn, 1.0, keep_alive=False) == pl.Close("server_close")
    assert pool.serve_waiter(1.0) == "b"
    assert pool.connecting == 1 and pool.size == 1


def test_unowned_connect_goes_to_waiter_else_idle() -> None:
    pool = make(max_size=2, min_size=2)
    assert pool.refill(0.0) == 2
    pool.checkout(0.0, "w")  # full (2 connecting): waits
    assert pool.connected(FakeConn("a"), 0.1, owned=False) == "w"
    assert pool.connected(FakeConn("b"), 0.1, owned=False) is None
    assert pool.gauges() == (1, 1, 0, 0)


def test_connect_failure_backs_off_checkout_and_refill() -> None:
    pool = make(min_size=3)
    pool.checkout(0.0, "w")
    until = pool.connect_failed(0.0)
    assert 0.0 <= until <= 0.1
    until = pool.connect_failed(until) if pool.checkout(until, "w") is pl.CONNECT else until
    assert pool.checkout(until - 1e-9, "w") == pl.BackingOff(until)
    assert pool.refill(until - 1e-9) == 0
    assert pool.refill(until) == 3
    pool.backoff.success()
    assert pool.backoff.attempt == 0


def test_cancel_wait_and_discard() -> None:
    pool = make(max_size=1, n_idle=0)
    pool.checkout(0.0, "a")
    pool.checkout(0.0, "b")
    assert pool.cancel_wait("b") is True
    assert pool.cancel_wait("b") is False
    conn = FakeConn("c")
    pool.connected(conn, 0.0, owned=True)
    pool.discard(conn)
    pool.discard(conn)  # idempotent
    assert pool.size == 0


def test_reserve_connect_respects_max_size() -> None:
    pool = make(max_size=1)
    assert pool.reserve_connect() is True
    assert pool.reserve_connect() is False


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"max_size": 0}, "max_size"), ({"min_size": 9}, "min_size"), ({"exhaustion": "x"}, "policy")],
)
def test_invalid_settings(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        pl.PoolSettings(**{"max_size": 3, **kw})  # type: ignore[arg-type]


def test_repr_shows_state() -> None:
    pool = make(n_idle=2)
    pool.checkout(0.0, "w")
    assert repr(pool) == "<Pool [1 active, 1 idle, 0 connecting | 0 waiting] max=3>"


def test_saturated_is_exactly_when_a_checkout_would_wait() -> None:
    pool = make(n_idle=1)
    assert not pool.saturated()  # an idle connection
    assert isinstance(pool.checkout(0.0, "a"), pl.Use)
    assert not pool.saturated()  # room to connect
    assert pool.checkout(0.0, "b") == pool.checkout(0.0, "c") == pl.CONNECT
    assert pool.saturated()
    assert pool.checkout(0.0, "d") == pl.Wait(until=1.0)
    assert not make(exhaustion="fail", n_idle=0).saturated()  # 'fail' never waits
