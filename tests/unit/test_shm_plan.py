"""The shared region's layout and fold, admission without a lock, shard splitting."""

import pytest

from poolsvc.config import loader as config
from poolsvc.config import plan
from workers.shared import histogram, shm
from workers.shared import slotstats as stats
from workers.shared.admission import REFUSE, SharedView
from workers.shared.errors import ConfigError


def test_layout_regions_do_not_overlap_and_slots_are_page_aligned() -> None:
    lay = shm.Layout(workers=3, targets=2)
    assert lay.breaker(1) + lay.brk_words <= lay.slot(0)
    for w in range(3):
        assert lay.slot(w) * 8 % 4096 == 0
        assert lay.slot(w) + stats.SLOT_WORDS + 2 * lay.tgt_words <= lay.slot(w + 1)
    # several targets: each block holds its own errors and histogram
    assert lay.tgt_words == shm.T_HIST + histogram.BUCKETS
    assert shm.Layout(workers=1, targets=1).tgt_words == shm.TGT_FIXED
    assert lay.retired == lay.slot(3)
    # after RETIRED, one WARMUP block per worker slot, then WARMUP_RETIRED
    assert [lay.warmup(w) for w in range(4)] == [
        lay.retired + (1 + w) * lay.slot_words for w in range(4)
    ]
    assert lay.total_words == lay.warmup(3) + lay.slot_words


def test_region_header_and_command_word() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1234)
    w = region.words
    assert (w[0], w[2], w[3], w[4]) == (shm.MAGIC, 2, 1, 1234)
    assert region.command() == (0, shm.CMD_RUN)
    region.send_command(shm.CMD_DRAIN)
    assert region.command() == (1, shm.CMD_DRAIN)


def test_fold_keeps_totals_and_zeroes_the_slot() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1)
    for worker, n in ((0, 5), (1, 7)):
        slot = region.slot(worker)
        stats.init_slot(slot, 100 + worker)
        slot[stats.REQ_OK] = n
        slot[stats.STATUS_BASE + 200] = n
        slot[stats.LAT_MAX] = 1000 * n
        slot[stats.HIST_BASE + 3] = n
        slot[stats.GAUGE_INDEX["connections.idle"]] = 2
        region.target_words(worker, 0)[shm.T_OK] = n
    before = stats.Snapshot.of([region.slot(0), region.slot(1), region.retired_slot()])
    region.fold(0)
    after = stats.Snapshot.of([region.slot(0), region.slot(1), region.retired_slot()])
    assert after.counters == before.counters  # totals never go backwards
    assert after.hist == before.hist
    assert after.counters["latency.max_us"] == 7000
    assert after.gauges["connections.idle"] == 2  # the folded worker's gauges are gone
    assert region.slot(0)[stats.REQ_OK] == 0 and region.slot(0)[3] == 1  # generation kept
    assert after.statuses == {200: 12} and after.counters["responses.2xx"] == 12
    assert region.retired_target_words(0)[shm.T_OK] == 5


def test_tagged_counts() -> None:
    word = shm.tag(7, 3)
    assert shm.tagged_count(word, 7) == 3
    assert shm.tagged_count(word, 8) == 0


def test_admission_closed_open_and_half_open_permits() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1)
    views = [SharedView(region.words, region.layout, w) for w in range(2)]
    row = region.breaker_row(0)
    row[shm.B_STATE] = shm.breaker_word(5, 1)  # OPEN, generation 5
    assert views[0].admit(0, row[shm.B_STATE]) == REFUSE
    row[shm.BRK_FIXED + 1] = shm.tag(6, 2)  # worker 1 holds 2 permits of generation 6
    row[shm.B_STATE] = shm.breaker_word(6, 2)  # HALF_OPEN
    state = row[shm.B_STATE]
    assert views[0].admit(0, state) == REFUSE  # no permit for worker 0
    assert [views[1].admit(0, state) for _ in range(3)] == [6, 6, REFUSE]
    views[1].trial_result(0, 6, ok=True)
    assert shm.tagged_count(region.target_words(1, 0)[shm.T_TRIAL_OK], 6) == 1
    row[shm.B_STATE] = shm.breaker_word(7, 0)  # CLOSED
    assert views[0].admit(0, row[shm.B_STATE]) == -1


def test_split_sums_exactly() -> None:
    assert plan.split(10, 3) == [4, 3, 3]
    assert sum(plan.split(1001, 4)) == 1001
    cfg = config.build({"pool_size": 10, "concurrency": 7, "requests": 100}, {})
    parts = plan.shards(cfg, 3, seed=9)
    assert [s.pool_size for s in parts] == [4, 3, 3]
    assert sum(s.concurrency for s in parts) == 7 and sum(s.requests for s in parts) == 100
    assert [s.seed for s in parts] == [9, 10, 11]


def test_worker_count_defaults_and_limits() -> None:
    assert plan.worker_count(config.build({"pool_size": 1}, {})) == 1
    # a request bound smaller than the worker count: a worker with none would be unbounded
    assert plan.worker_count(config.build({"pool_size": 8, "requests": 1}, {})) == 1
    with pytest.raises(ConfigError, match=r"workers \(2\) exceeds requests \(1\)"):
        plan.worker_count(config.build({"pool_size": 8, "workers": 2, "requests": 1}, {}))
    with pytest.raises(ConfigError, match=r"workers \(4\) exceeds pool_size \(2\)"):
        plan.worker_count(config.build({"pool_size": 2, "workers": 4}, {}))


def test_the_run_plan_is_resolved_once_and_spec_and_reshard_need_no_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = config.build(
        {
            "targets": [
                {"host": "127.0.0.1", "port": 8001, "pool_size": 6, "weight": 3, "name": "a"},
                {"host": "127.0.0.1", "port": 8002, "pool_size": 4, "method": "HEAD"},
            ],
            "concurrency": 9,
            "requests": 90,
            "duration_s": 2.5,
        },
        {},
    )
    run = plan.resolve(cfg, [("127.0.0.1", 8001), ("127.0.0.1", 8002)], seed=5, n=2)

    def no_config(*args: object) -> None:
        raise AssertionError("the configuration was read again after resolve()")

    for name in ("target_configs", "target_config", "target_spec", "faults"):
        monkeypatch.setattr(config, name, no_config)
        monkeypatch.setattr(plan, name, no_config, raising=False)
    assert run.names == ["a", "127.0.0.1:8002"] and run.pool_size == 10
    specs = [run.spec(shard) for shard in run.shards]
    for t in range(2):  # each target's pool is split exactly over the workers
        assert sum(s.targets[t].pool.max_size for s in specs) == (6, 4)[t]
        assert {s.targets[t].total for s in specs} == {((6, 6), (4, 4))[t]}
    assert [p.weight for p in specs[0].targets] == [3, 1]
    assert specs[1].targets[1].spec.method == "HEAD"
    assert sum(s.bounds.requests for s in specs) == 90 and specs[0].bounds.duration == 2.5
    three = run.reshard(3, concurrency=12, rate=0.0)
    assert [s.pools for s in three] == [((2, 2), (2, 2)), ((2, 2), (1, 1)), ((2, 2), (1, 1))]
    assert sum(s.concurrency for s in three) == 12


def test_a_service_plan_has_no_bound() -> None:
    cfg = config.build({"host": "127.0.0.1", "port": 8001, "requests": 50}, {})
    run = plan.resolve(cfg, [("127.0.0.1", 8001)], seed=1, n=1, forever=True)
    bounds = run.spec(run.shards[0]).bounds
    assert bounds.forever and bounds.requests == 0 and bounds.duration == 0.0
