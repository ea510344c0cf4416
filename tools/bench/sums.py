"""What the supervisor's sums cost: one snapshot of the slots and one row's sparse
histogram, the work it does several times a second on a core a worker may share.

    python -m tools.bench.sums

Two busy slots (40 counters, a status code, 1,100 buckets of each latency
histogram) and the retired one (empty); a row's histogram with 40 buckets moved,
the usual case, and with 1,100 moved, the worst.
"""

from __future__ import annotations

import random
import timeit
from array import array

from poolsvc.metrics.recording import _sparse
from workers.shared import slotstats as st
from workers.shared.slotstats import Snapshot

N = 200


def _slot(rng: random.Random) -> memoryview:
    words = [0] * st.SLOT_WORDS
    for name in st.COUNTERS[:40]:
        words[st.INDEX[name]] = rng.randint(0, 10**6)
    words[st.STATUS_BASE + 200] = 10**6
    for i in range(300, 1400):
        words[st.HIST_BASE + i] = rng.randint(0, 9)
        words[st.HIST2_BASE + i] = rng.randint(0, 9)
    return memoryview(array("Q", words))


def main() -> int:
    rng = random.Random(1)
    slots = [_slot(rng), _slot(rng), memoryview(array("Q", [0] * st.SLOT_WORDS))]
    snap = timeit.timeit(lambda: Snapshot.of(slots), number=N) / N
    worst_new, worst_old = Snapshot.of(slots).hist, Snapshot.of(slots[:1]).hist
    old = list(worst_old)
    new = list(old)
    for i in range(600, 640):
        new[i] += 5
    usual = timeit.timeit(lambda: _sparse(new, old), number=N) / N
    worst = timeit.timeit(lambda: _sparse(worst_new, worst_old), number=N) / N
    print(f"Snapshot.of, 2 busy slots and the retired one: {snap * 1e6:.0f} µs")
    print(f"a row's sparse histogram, 40 buckets moved: {usual * 1e6:.0f} µs")
    print(f"a row's sparse histogram, 1,100 buckets moved: {worst * 1e6:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
