"""Where the time goes in the pure-Python path: py-spy samples of a worker at full load,
as self time per function.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from tools.bench.common import ROOT, nginx, path_env, pin, run_argv


def profile(seconds: float) -> str:
    if shutil.which("py-spy") is None and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        return "(py-spy is not installed: `pip install py-spy`)"
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    with nginx() as ng, tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(  # the Python path: py-spy sees its functions
            pin(run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=path_env(True),
        )
        time.sleep(2)
        worker = psutil.Process(proc.pid).children()[0].pid
        raw = Path(d) / "raw.txt"
        subprocess.run(
            [
                spy,
                "record",
                "--format",
                "raw",
                "-o",
                str(raw),
                "-d",
                str(int(seconds)),
                "-p",
                str(worker),
                "--nonblocking",
                "-r",
                "200",
            ],
            capture_output=True,
            timeout=seconds + 30,
        )
        proc.wait(60)
        own: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            name = re.sub(r" \((.*?)/([^/]+\.py):\d+\)", r" (\2)", leaf)
            own[name] += int(count)
            total += int(count)
    lines = ["| function (self time) | share of samples |", "|---|---|"]
    for name, n in own.most_common(15):
        lines.append(f"| `{name}` | {100 * n / total:.1f} % |")
    return "\n".join(lines)
