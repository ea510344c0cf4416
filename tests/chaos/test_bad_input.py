"""Fuzzed config files and command lines: exit 2 with a one-line reason, never a traceback.

Every generated run points at 127.0.0.1:9, where nothing listens: a config that
happens to be valid ends at the pre-flight connect (exit 4) before any load, and no
fuzzed value can make poolsvc connect anywhere else (the command line's host wins;
a generated targets list conflicts with it and is refused).
"""

from __future__ import annotations

import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolsvc.cli import main as cli
from poolsvc.cli import poolctl
from poolsvc.config.keys import KEYS

SAFE = ["--host", "127.0.0.1", "--port", "9", "--connect-timeout-ms", "100"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
KEY_NAMES = st.sampled_from([*KEYS, "bogus", ""])
FLAGS = st.sampled_from(
    [
        "--size",
        "--concurrency",
        "--duration",
        "--requests",
        "--rate",
        "--ramp",
        "--workers",
        "--exhaustion",
        "--header",
        "--method",
        "--path",
        "--seed",
        "--read-timeout-ms",
        "--breaker-open-ms",
        "--timeline",
        "--bogus",
    ]
)
ARG_VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(-5, 10**6).map(str),
    st.sampled_from(["0", "-1", "nan", "inf", "1e400", "10s", "x:y", ""]),
)


def call(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse exits by itself on usage errors
            code = int(exc.code or 0)
    return code, err.getvalue()


def one_line_reason(code: int, err: str) -> None:
    assert code in (2, 4), (code, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=st.dictionaries(KEY_NAMES, VALUES, max_size=5))
def test_fuzzed_config_files(doc: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as d:  # one per example, removed after it
        path = Path(d) / "c.json"
        try:
            path.write_text(json.dumps(doc, default=str).replace("NaN", "1e999"))
        except ValueError:
            return
        code, err = call(["run", "--config", str(path), *SAFE])
    one_line_reason(code, err)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(st.tuples(FLAGS, ARG_VALUES), max_size=4))
def test_fuzzed_command_lines(args: list[tuple[str, str]]) -> None:
    argv = ["run"] + [part for pair in args for part in pair] + SAFE
    code, err = call(argv)
    one_line_reason(code, err)


def test_not_json_at_all(tmp_path: Path) -> None:
    for text in ("", "[]", "{", "\x00\xff", '{"pool_size": 1e999}', "null"):
        path = tmp_path / "c.json"
        path.write_bytes(text.encode("latin-1"))
        one_line_reason(*call(["run", "--config", str(path), *SAFE]))


@pytest.mark.parametrize("prog", ["poolsvc", "poolctl"])
def test_a_control_character_in_an_argument_stays_on_the_one_line(prog: str) -> None:
    """argparse echoes an unknown argument as typed; a carriage return in it must not
    split the reason over two lines (found by the fuzzer above: ``--bogus '\\r0'``)."""
    main = cli.main if prog == "poolsvc" else poolctl.main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(["status" if prog == "poolctl" else "run", "--bogus", "", "--bogus", "\r0\nx\x1b"])
    assert exc.value.code == 2
    one_line_reason(2, err.getvalue())
    assert "\\r0\\nx\\x1b" in err.getvalue()
