"""Shards of one run: the schedule's union is the one-machine schedule, splits are exact."""

from __future__ import annotations

import itertools

import pytest

from poolsvc.config import loader as config
from poolsvc.config import plan, sharding
from poolsvc.config.sharding import Instance, instance, open_loop_share, start_at
from workers.loop.loadshape import Schedule
from workers.shared.errors import ConfigError


def cfg(**values: object) -> config.Config:
    return config.build({}, values)


@pytest.mark.parametrize(
    ("n", "workers", "ramp"), [(3, 2, 0.0), (3, 2, 4.0), (5, 1, 1.5), (1, 4, 0.0)]
)
def test_the_shards_arrivals_are_the_one_machine_schedule(
    n: int, workers: int, ramp: float
) -> None:
    """Every (shard, worker)'s intended times, together, are exactly the global
    schedule's: the same instants, each once, interleaved (never bursty)."""
    rate, count = 1000.0, 3000
    one = Schedule(rate, 100.0, ramp)
    whole = [one.take() for _ in range(count)]
    union = []
    for k in range(n):
        one_cfg = cfg(rate=rate, duration_s=10.0, pool_size=8, workers=workers, ramp_s=ramp)
        shards = plan.shards(one_cfg, workers, 1, Instance(k, n))
        for s in shards:
            sched = Schedule(s.rate, 100.0, ramp, s.stride, s.phase)
            union += [sched.take() for _ in range(count // (n * workers) + 1)]
    union = sorted(t for t in union if t <= whole[-1])
    assert union == whole


def test_an_open_loop_request_bound_is_split_exactly() -> None:
    for total, n, w in itertools.product((1, 7, 100, 1001), (1, 2, 3, 7), (1, 2, 4)):
        shares = [open_loop_share(total, k + n * i, n * w) for k in range(n) for i in range(w)]
        assert sum(shares) == total and max(shares) - min(shares) <= 1


def test_closed_loop_shares_spread_the_remainders() -> None:
    whole = cfg(requests=1000, concurrency=10, pool_size=11, duration_s=0.0)
    parts = [sharding.instance_config(whole, Instance(k, 3)) for k in range(3)]
    assert [p.requests for p in parts] == [334, 333, 333]
    assert [p.concurrency for p in parts] == [4, 3, 3]
    assert [p.pool_size for p in parts] == [4, 4, 3]
    with pytest.raises(ConfigError, match="pool_size \\(2\\) is smaller than the shards \\(3\\)"):
        sharding.instance_config(cfg(pool_size=2, requests=10), Instance(2, 3))


def test_the_index_comes_from_the_flag_or_the_indexed_job() -> None:
    assert instance(cfg(shard="2/3", requests=5)) == Instance(2, 3)
    assert instance(cfg(shards=4, requests=5), {"JOB_COMPLETION_INDEX": "3"}) == Instance(3, 4)
    assert instance(cfg(requests=5), {"JOB_COMPLETION_INDEX": "3"}) == Instance(0, 1)
    for bad, env, named in [
        ({"shard": "3/3"}, {}, "must be in [0, 3)"),
        ({"shard": "1-3"}, {}, "K/N"),
        ({"shards": 3}, {}, "JOB_COMPLETION_INDEX"),
        ({"shards": 3}, {"JOB_COMPLETION_INDEX": "5"}, "must be in [0, 3)"),
        ({"shard": "1/3", "shards": 4}, {}, "disagrees"),
    ]:
        with pytest.raises(ConfigError) as exc:
            instance(cfg(requests=5, **bad), env)
        assert named in str(exc.value)


def test_start_at_reads_rfc3339_and_epoch_seconds() -> None:
    assert start_at("2026-11-30T10:00:00Z") == start_at("2026-11-30T11:00:00+01:00")
    assert start_at("1796030000.5") == 1796030000.5
    assert start_at(None) == 0.0
    for bad in ("tomorrow", "2026-11-30T10:00:00", "-5", "nan"):
        with pytest.raises(ConfigError, match="start_at"):
            start_at(bad)


def test_every_shard_of_a_run_has_its_run_id_and_another_run_another() -> None:
    ids = {sharding.run_id(cfg(rate=300.0, duration_s=5.0, shard=f"{k}/3"), Instance(k, 3))
           for k in range(3)}  # fmt: skip
    assert len(ids) == 1
    other = sharding.run_id(cfg(rate=301.0, duration_s=5.0), Instance(0, 3))
    assert other not in ids
