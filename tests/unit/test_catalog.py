"""The metric catalog: every counter of the slot is exported, as its row says.

A slot with a distinct value in every counter is rendered by the Prometheus renderer and
read back with prometheus_client's parser; each row's sample must be there, with its
labels, its value scaled to base units."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolsvc.report import prometheus
from workers.shared import catalog
from workers.shared import slotstats as st


def _slot_with_every_counter_distinct() -> st.Snapshot:
    slot = memoryview(bytearray(st.SLOT_BYTES)).cast("Q")
    for i, name in enumerate(st.COUNTERS):
        slot[st.INDEX[name]] = 1000 + 7 * i
    slot[st.STATUS_BASE + 200] = 5
    return st.Snapshot.of([slot])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture(scope="module")
def exported() -> tuple[st.Snapshot, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    snap = _slot_with_every_counter_distinct()
    out: list[str] = []
    for fam in prometheus.run_families(snap):
        fam.render(out, openmetrics=False)
    return snap, _samples("\n".join(out) + "\n")


def _sample_name(row: catalog.Row) -> str:
    kind = catalog.FAMILIES[row.family][0]
    suffix = {"counter": "_total", "gauge": ""}.get(kind, "_sum")
    return f"poolsvc_{row.family}{suffix}"


def test_the_slot_layout_is_the_catalog() -> None:
    assert tuple(row.name for row in catalog.ROWS) == st.COUNTERS
    assert len(catalog.BY_NAME) == len(catalog.ROWS)  # no name twice
    assert {row.family for row in catalog.ROWS} == set(catalog.FAMILIES)  # none empty


@pytest.mark.parametrize("row", catalog.ROWS, ids=lambda row: row.name)
def test_every_counter_is_exported_as_its_row_says(
    row: catalog.Row,
    exported: tuple[st.Snapshot, dict[tuple[str, tuple[tuple[str, str], ...]], float]],
) -> None:
    snap, samples = exported
    key = (_sample_name(row), tuple(sorted(row.labels)))
    assert key in samples, key
    assert math.isclose(samples[key], snap.counters[row.name] * row.scale, rel_tol=1e-6)


def test_connections_shutdown_is_exported(
    exported: tuple[st.Snapshot, dict[tuple[str, tuple[tuple[str, str], ...]], float]],
) -> None:
    """It was counted and never exported: the row that regressed."""
    snap, samples = exported
    assert (
        samples[("poolsvc_connections_shutdown_total", ())] == snap.counters["connections.shutdown"]
    )


def test_the_check_sees_a_row_nobody_renders(
    exported: tuple[st.Snapshot, dict[tuple[str, tuple[tuple[str, str], ...]], float]],
) -> None:
    _, samples = exported
    ghost = catalog.Row("ghost.count", "connections_shutdown", (("x", "y"),))
    assert (_sample_name(ghost), tuple(sorted(ghost.labels))) not in samples
