"""The HTML report, loaded in a real headless Chromium with the network off.

Chromium comes from the Debian package (installed by ``.ci/run``). The network is
really off: the browser runs in a new network namespace with no interface but a
down loopback (``unshare -n``), when we may create one; otherwise every host is
mapped to nowhere. Console output is read from Chromium's own log, and the figures
of the summary table are compared with the JSON result, one by one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POOLSVC

pytestmark = pytest.mark.integration


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run must install it")
    pytest.skip("chromium is not installed (.ci/run installs the Debian package)")


def offline() -> list[str]:
    """A prefix that runs a command with no network at all, when we may make one."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        return [unshare, "-n"]
    return []


def load(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and every console line it printed."""
    cmd = [
        *offline(),
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",  # belt and braces: nothing may be fetched
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (Chromium's own pages may log too, e.g. "Slow network is detected" from
    # chrome://resources on a busy machine: those are not the page's)
    console = [
        line
        for line in proc.stderr.splitlines()
        if ":CONSOLE" in line and "source: chrome://" not in line
    ]
    return proc.stdout, console


class Summary(HTMLParser):
    """The summary table's rows (key -> shown value), the charts, the external loads."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.charts = 0
        self.external: list[str] = []
        self.rendered = ""
        self.verdicts: list[str] = []
        self._key = ""
        self._cell = False
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.rendered = a.get("data-rendered") or ""
        if tag == "table" and a.get("id") == "summary":
            self._in_summary = True
        if tag == "tr" and self._in_summary and a.get("data-key"):
            self._key = a["data-key"] or ""
        if tag == "td" and self._key:
            self._cell = True
        if tag == "tr" and a.get("class") in ("pass", "fail"):
            self.verdicts.append("pass" if a["class"] == "pass" else "FAIL")
        if tag == "div" and "uplot" in (a.get("class") or "").split():
            self.charts += 1
        for name in ("src", "href"):
            if a.get(name):
                self.external.append(f"{tag} {name}={a[name]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_summary = False
        if tag == "tr":
            self._key = ""

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.rows[self._key] = data
            self._cell = False


def same(shown: str, value: Any) -> bool:
    if value is None:
        return shown == "-"
    if isinstance(value, bool):
        return shown == str(value).lower()
    if isinstance(value, int | float):
        return float(shown) == float(value)
    if isinstance(value, dict | list):
        return json.loads(shown) == value
    return shown == str(value)


def read(page: Path, tmp_path: Path) -> Summary:
    dom, console = load(page, tmp_path / "profile")
    assert not console, console  # no error, no warning, nothing at all
    parsed = Summary()
    parsed.feed(dom)
    assert parsed.rendered == "ok"
    return parsed


def test_the_console_check_can_fail(tmp_path: Path) -> None:
    """The check above sees what a broken page prints (it is not vacuous)."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('x'); missing();</script></body></html>")
    _, console = load(page, tmp_path / "profile")
    assert any("missing is not defined" in line for line in console), console


def test_the_report_opens_offline_and_its_table_is_the_json_result(
    target: Any, tmp_path: Path
) -> None:
    html, out = tmp_path / "run.html", tmp_path / "run.json"
    proc = subprocess.run(
        [*POOLSVC, "run", "--host", target.host, "--port", str(target.port), "--duration",
         "2s", "--rate", "800", "--inject-failures", "--report", str(html), "--json",
         "--threshold", "rps>1", "--threshold", "latency:p(99)<1us"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 99, proc.stderr  # the second threshold cannot hold
    out.write_text(proc.stdout)
    doc = json.loads(proc.stdout)
    parsed = read(html, tmp_path)
    assert parsed.verdicts == ["pass", "FAIL"]  # the thresholds' table, drawn
    assert not parsed.external, parsed.external  # nothing loaded from anywhere
    assert set(parsed.rows) == set(doc["metrics"])
    wrong = {
        k: (v, doc["metrics"][k]) for k, v in parsed.rows.items() if not same(v, doc["metrics"][k])
    }
    assert not wrong
    # throughput, percentiles, errors, connections, late/dropped, spectrum, histogram
    assert parsed.charts == 7
    # the same result re-rendered from the saved JSON is the same page
    again = tmp_path / "again.html"
    made = subprocess.run(
        [*POOLSVC, "report", str(out), "-o", str(again)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert again.read_text() == html.read_text()


def test_a_short_closed_loop_run_still_draws_curves(target: Any, tmp_path: Path) -> None:
    """k6 draws nothing under 3 x its period; a second-long run here gets sub-second rows."""
    html = tmp_path / "short.html"
    doc = json.loads(
        subprocess.run(
            [*POOLSVC, "run", "--host", target.host, "--port", str(target.port), "--duration",
             "1s", "--report", str(html), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    rows = doc["timeline"]["rows"]
    assert len(rows) >= 4 and all(r["t1"] - r["t0"] <= 0.5 for r in rows[:-1])
    assert sum(r["counts"].get("requests.ok", 0) for r in rows) == doc["metrics"]["requests.ok"]
    parsed = read(html, tmp_path)
    assert parsed.charts == 5  # no errors, closed loop: no error or lateness chart


def test_a_target_name_cannot_break_out_of_the_page(target: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    evil = "</script><script>console.error('pwned')</script>"
    cfg.write_text(
        json.dumps(
            {"targets": [{"host": target.host, "port": target.port, "name": evil}],
             "requests": 50}
        )
    )  # fmt: skip
    html = tmp_path / "evil.html"
    subprocess.run(
        [*POOLSVC, "run", "--config", str(cfg), "--report", str(html)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    read(html, tmp_path)  # no console line: the script never ran
    assert re.search(r"</script><script>console", html.read_text()) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not JSON"),
        ('{"format": "k6"}', "not a poolsvc result"),
        ("[1, 2]", "not a poolsvc result"),
        ('{"format": "poolsvc-result/1"}', "'metrics' missing"),
    ],
)
def test_a_bad_result_file_is_exit_2_with_one_line(
    tmp_path: Path, content: str, reason: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = subprocess.run(
        [*POOLSVC, "report", str(bad), "-o", str(tmp_path / "x.html")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and reason in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.html").exists()
