"""Who was the limit of an open-loop run: numbers in, a verdict out."""

import pytest

from poolsvc.metrics.capacity import judge


def test_kept_up_names_no_limit() -> None:
    v = judge(due=80_000, sent=80_000, late=400, busy_s=1.2, workers=1, load_s=4.0)
    assert (v.limit, v.line()) == ("", "")
    assert v.busy == pytest.approx(0.3)


def test_behind_and_busy_is_the_generator() -> None:
    v = judge(due=1_200_000, sent=320_000, late=319_000, busy_s=3.9, workers=1, load_s=4.0)
    assert v.limit == "generator"
    assert v.line().startswith("[pool] the generator was the limit, not the target: sent 27%")


def test_behind_but_waiting_is_the_target() -> None:
    v = judge(due=40_000, sent=39_000, late=38_000, busy_s=0.8, workers=2, load_s=4.0)
    assert v.limit == "target" and v.busy == pytest.approx(0.1)
    assert "the target was the limit" in v.line()


def test_late_alone_is_behind() -> None:
    # every request went out, but 5 % of them late: the schedule was not kept
    assert judge(1000, 1000, 50, 3.9, 1, 4.0).limit == "generator"
    assert judge(1000, 1000, 10, 3.9, 1, 4.0).limit == ""


def test_nothing_measured_is_no_verdict() -> None:
    assert judge(0, 0, 0, 0.0, 1, 0.0).limit == ""
