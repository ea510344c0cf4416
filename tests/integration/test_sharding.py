"""N machines simulated on one: three shards of one run against nginx, merged exactly;
merge refusing what is not one run; the Kubernetes manifests against the schema."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hdrh.histogram import HdrHistogram

from poolsvc.metrics import hlog
from tests.conftest import POOLSVC
from tools.nginx import Nginx
from workers.shared import histogram

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RATE, SECONDS = 600, 3


def shards(
    url: str, tmp_path: Path, n: int = 3, rate: int = RATE, extra: tuple[str, ...] = ()
) -> list[Path]:
    """``n`` shards of one open-loop run, started together by --start-at."""
    start = f"{time.time() + 4.0:.3f}"  # time for every instance to come up first
    procs = []
    for k in range(n):
        argv = [*POOLSVC, "run", url, "--rate", str(rate), "--duration", f"{SECONDS}s"]
        argv += ["--shard", f"{k}/{n}", "--start-at", start, "--workers", "1", "--size", "4"]
        argv += ["--hlog", str(tmp_path / f"shard{k}.hlog"), *extra, "--json"]
        procs.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        (tmp_path / f"shard{k}.json").write_text(out)
    return [tmp_path / f"shard{k}.json" for k in range(n)]


def merge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLSVC, "merge", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def simulated(nginx: Nginx, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("shards")
    before = nginx.requests_served()
    paths = shards(f"http://{nginx.host}:{nginx.port}/", tmp)
    served = nginx.requests_served() - before - 1  # minus this status request
    logs = [str(p.with_suffix(".hlog")) for p in paths]
    outputs = ["--hlog", str(tmp / "merged.hlog"), "--report", str(tmp / "merged.html")]
    proc = merge(
        *map(str, paths), *logs, *outputs, "--threshold", "requests.failed:count==0", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    return {
        "paths": paths,
        "docs": [json.loads(p.read_text()) for p in paths],
        "merged": json.loads(proc.stdout),
        "served": served,
        "dir": tmp,
    }


def test_the_merged_count_is_nginx_s_and_the_one_machine_plan_s(simulated: dict[str, Any]) -> None:
    merged, docs = simulated["merged"], simulated["docs"]
    one_machine = math.ceil(RATE * SECONDS)  # the global schedule's arrivals before the end
    assert [d["metrics"]["requests.sent"] for d in docs] == [200 * SECONDS] * 3  # exact thirds
    assert merged["metrics"]["requests.sent"] == simulated["served"] == one_machine
    assert merged["metrics"]["requests.ok"] == one_machine
    assert [d["shard"]["index"] for d in docs] == [0, 1, 2]
    assert len({d["shard"]["run_id"] for d in docs}) == 1
    assert all(0 <= d["shard"]["start_skew_ms"] < 4000 for d in docs)
    assert merged["thresholds"][0]["ok"]


def test_shards_warm_up_together_and_merge_their_warm_ups(nginx: Nginx, tmp_path: Path) -> None:
    """--warmup with --start-at: every shard warms up from the same instant and starts
    its measured share of the one schedule at start + warm-up, so the merged count is
    still exactly rate x duration; the warm-ups merge apart."""
    before = nginx.requests_served()
    paths = shards(f"http://{nginx.host}:{nginx.port}/", tmp_path, n=2, extra=("--warmup", "1"))
    served = nginx.requests_served() - before - 1  # minus this status request
    proc = merge(*map(str, paths), "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["metrics"]
    parts = [json.loads(p.read_text())["metrics"] for p in paths]
    assert m["requests.sent"] == RATE * SECONDS and m["requests.ok"] == RATE * SECONDS
    assert m["warmup.requests.sent"] == sum(p["warmup.requests.sent"] for p in parts) > 0
    assert served == m["requests.sent"] + m["warmup.requests.sent"]
    assert m["warmup.connections.created"] == sum(p["warmup.connections.created"] for p in parts)


def test_merged_percentiles_are_those_of_every_sample_in_one_histogram(
    simulated: dict[str, Any],
) -> None:
    counts = [0] * histogram.BUCKETS
    for doc in simulated["docs"]:
        for low, _high, n in doc["histograms"]["latency"]["buckets"]:
            counts[histogram.bucket_of(low)] += n
    merged = simulated["merged"]
    got = [0] * histogram.BUCKETS
    for low, _high, n in merged["histograms"]["latency"]["buckets"]:
        got[histogram.bucket_of(low)] = n
    assert got == counts
    top = max(d["histograms"]["latency"]["max"] for d in simulated["docs"])
    for p, key in ((50, "p50"), (99, "p99"), (99.9, "p99_9")):
        assert merged["metrics"][f"latency.{key}_ms"] == histogram.percentile(counts, p, top) / 1000
    rows = merged["timeline"]["rows"]
    assert (
        sum(r["counts"].get("requests.sent", 0) for r in rows) == merged["metrics"]["requests.sent"]
    )


def test_the_merged_log_holds_every_sample(simulated: dict[str, Any]) -> None:
    total = HdrHistogram(hlog.LOWEST, hlog.HIGHEST, hlog.DIGITS)
    text = (simulated["dir"] / "merged.hlog").read_text()
    for line in text.splitlines():
        if line.startswith("Tag="):
            total.decode_and_add(line.rsplit(",", 1)[1])
    assert total.get_total_count() == simulated["merged"]["histograms"]["latency"]["count"]


def test_merge_refuses_a_missing_shard_and_another_run(
    simulated: dict[str, Any], target: Any, tmp_path: Path
) -> None:
    paths = [str(p) for p in simulated["paths"]]
    proc = merge(paths[0], paths[2])
    assert proc.returncode == 2 and "missing shard 1/3" in proc.stderr, proc.stderr
    proc = merge(paths[0], paths[1], paths[1], paths[2])
    assert proc.returncode == 2 and "shard 1/3 given twice" in proc.stderr
    other = shards(f"http://{target.host}:{target.port}/", tmp_path, n=3, rate=300)
    proc = merge(paths[0], paths[1], str(other[2]))
    assert proc.returncode == 2 and "different runs cannot be merged" in proc.stderr
    assert str(other[2]) in proc.stderr and proc.stderr.count("\n") == 1


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_kubernetes_manifests_validate_against_the_schema() -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Job", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert f"--shards={spec['completions']}" in args and "--start-at=$(START_AT)" in args


def test_the_schema_check_can_fail() -> None:
    (job,) = [d for d in manifests() if d["kind"] == "Job"]
    job["spec"]["completionMode"] = 3  # not a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30", strict=True)


def test_the_job_s_arguments_are_a_valid_command_line(tmp_path: Path) -> None:
    """The manifest's own arguments, as poolsvc reads them (only the bound shortened)."""
    (job,) = [d for d in manifests() if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = [a.replace("$(START_AT)", f"{time.time():.0f}") for a in container["args"]]
    args = [a for a in args if not a.startswith(("--duration", "--linger", "--metrics-addr"))]
    args[1] = "http://127.0.0.1:9/"  # nothing listens: exit 4 after the arguments held
    proc = subprocess.run(
        [*POOLSVC, *args, "--requests", "10"], capture_output=True, text=True, timeout=60,
        env={"JOB_COMPLETION_INDEX": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr


def test_merge_refuses_a_result_without_its_shard_record(
    simulated: dict[str, Any], tmp_path: Path
) -> None:
    doc = json.loads(simulated["paths"][0].read_text())
    del doc["shard"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(doc))
    proc = merge(str(bare), *map(str, simulated["paths"][1:]))
    assert proc.returncode == 2 and "no shard record" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
