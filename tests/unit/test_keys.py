"""The key table makes the CLI's flags: every flag sets its key, typed as the key is."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from poolsvc.cli import main as cli
from poolsvc.config import keys
from poolsvc.config.keys import Config

_FLAGGED = [f for f in fields(Config) if f.metadata["flag"]]
_SAMPLE = {int: ("7", 7), float: ("2.5", 2.5), str: ("x.example", "x.example")}


def _parse(command: str, *argv: str) -> dict[str, object]:
    return vars(cli._parser().parse_args([command, *argv]))


def _sub(command: str) -> argparse.ArgumentParser:
    """The sub-command's own parser (argparse keeps them in its subparsers action)."""
    [action] = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = action.choices[command]
    return parser


@pytest.mark.parametrize("f", _FLAGGED, ids=lambda f: f.name)
def test_every_flag_sets_its_key_with_the_keys_type(f: object) -> None:
    name, meta = f.name, f.metadata  # type: ignore[attr-defined]
    if not meta["flag"].startswith("-"):  # the argument
        argv, want = ["https://x.example/p"], "https://x.example/p"
    elif meta["const"] is not None:
        argv, want = [meta["flag"]], meta["const"]
    elif name == "headers":
        argv, want = [meta["flag"], "X-A: b"], [("X-A", "b")]
    elif name == "thresholds":  # repeatable: each one kept, as written
        argv = [meta["flag"], "rps>5", meta["flag"], "latency:p(99)<1ms"]
        want = ["rps>5", "latency:p(99)<1ms"]
    else:
        accepted = keys.KEYS[name][0]
        text, want = _SAMPLE[float if float in accepted else accepted[0]]
        argv = [meta["flag"], text]
    got = _parse("run", *argv)[name]
    assert got == want and type(got) is type(want)


def test_serve_has_every_flag_but_the_bounds_and_the_run_only_ones() -> None:
    serve = {a.dest for a in _sub("serve")._actions}
    for f in _FLAGGED:
        wanted = not (f.metadata["bound"] or f.metadata["run_only"])
        assert (f.name in serve) is wanted, f.name


def test_help_renders_every_flag_with_its_default() -> None:
    for command in ("run", "serve", "churn"):
        with pytest.raises(SystemExit):
            _parse(command, "--help")
    text = _sub("run").format_help()
    assert "2.5 % jitter" in text and "(default 10.0)" in text


def test_a_key_without_a_unit_suffix_names_its_unit() -> None:
    assert keys.unit("read_timeout_ms") == "ms" and keys.unit("ramp_s") == "s"
    assert keys.unit("rate") == "req/s" and keys.unit("pool_size") == ""
