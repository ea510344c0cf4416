"""Reading a target block while its worker writes: counts and names from one instant."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from poolsvc.arbiter import readings
from workers.shared import shm
from workers.shared.errors import ERROR_INDEX, ERROR_NAMES

WORDS = shm.T_HIST + 40


class Written:
    """A target block that a worker writes while it is being copied: the first copy
    sees a failure's count but not yet its name (the worker writes the two words one
    after the other), the copies after it see both."""

    def __init__(self, failed: int, named: int) -> None:
        self.copies = 0
        self.torn = self._words(failed, named - 1)
        self.whole = self._words(failed, named)

    @staticmethod
    def _words(failed: int, named: int) -> list[int]:
        words = [0] * WORDS
        words[shm.T_RESP_FAILED] = failed
        words[shm.T_ERRORS + ERROR_INDEX["status_4xx"]] = named
        words[shm.T_POOL] = 3  # a gauge: it may move between copies, it is not compared
        return words

    def tolist(self) -> list[int]:
        self.copies += 1
        return list(self.torn if self.copies == 1 else self.whole)


class Region:
    def __init__(self, block: Any) -> None:
        self.block = block

    def measured_target(self, _index: int, _t: int, _copy: Any = None) -> Any:
        return self.block  # (no warm-up: the slot's own view, settled by the reader)

    def retired_target_words(self, _t: int) -> Any:
        return Written(0, 0)


def test_a_failure_is_never_read_without_its_name() -> None:
    block = Written(failed=428, named=428)
    snap = readings.target_snapshot(Region(block), [SimpleNamespace(index=0)], 0)  # type: ignore[arg-type]
    assert snap.counters["requests.failed"] == 428
    assert snap.errors() == {"status_4xx": 428}
    assert block.copies >= 2


def test_a_block_that_never_settles_is_read_once_more_and_taken() -> None:
    class Busy:
        n = 0

        def tolist(self) -> list[int]:
            self.n += 1
            words = [0] * WORDS
            words[shm.T_RESP_OK] = self.n  # a worker that answers between every two copies
            return words

    busy = Busy()
    copy = readings.settled(busy)  # type: ignore[arg-type]
    assert busy.n == readings._TRIES + 1 and copy[shm.T_RESP_OK] == busy.n


def test_gauges_moving_do_not_stop_a_read_settling() -> None:
    class Gauges:
        n = 0

        def tolist(self) -> list[int]:
            self.n += 1
            words = [0] * WORDS
            words[shm.T_POOL] = self.n  # the pool gauges change every step
            words[shm.T_HIST + 3] = 7
            return words

    gauges = Gauges()
    assert readings.settled(gauges)[shm.T_HIST + 3] == 7  # type: ignore[arg-type]
    assert gauges.n == 2
    assert len(ERROR_NAMES) + shm.T_ERRORS == shm.T_HIST
