"""Docs that restate a fact of the code are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

from poolsvc.config import keys
from poolsvc.config import loader as config
from workers.shared import injection, shm
from workers.shared import slotstats as stats
from workers.shared.errors import ERROR_NAMES
from workers.shared.slotstats import COUNTERS, EVICT_REASONS

ROOT = Path(__file__).parents[2]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_readme_config_table_is_the_key_table() -> None:
    section = _section((ROOT / "README.md").read_text(), "### Configuration file")
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == keys.markdown()
    assert set(re.findall(r"^\| `(\w+)` \|", table, re.M)) == set(config.KEYS)


def test_readme_outcomes_are_the_ledgers() -> None:
    table = _section((ROOT / "README.md").read_text(), "### Every request accounted for")
    rows = set(re.findall(r"^\| `(requests\.\w+)` \|", table, re.M))
    assert rows == {f"requests.{k}" for k in ("ok", "failed", "unsent", "abandoned", "lost")}
    assert rows < set(COUNTERS)


def test_architecture_lists_every_error_name_and_eviction_reason() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    errors = _section(doc, "### Failure names")
    assert set(re.findall(r"^\| `(\w+)` \|", errors, re.M)) == set(ERROR_NAMES)
    evictions = _section(doc, "### Eviction reasons")
    assert set(re.findall(r"^\| `(\w+)` \|", evictions, re.M)) == set(EVICT_REASONS)


def _named_words(section: str) -> dict[str, int]:
    return {name: int(word) for word, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M)}


def test_architecture_layout_tables_match_the_module_of_record() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    layout = _section(doc, "## Shared region byte layout")
    words = _named_words(layout)
    for prefix in ("H_", "C_", "T_"):
        in_code = {
            n: v for n, v in vars(shm).items() if n.startswith(prefix) and isinstance(v, int)
        }
        in_doc = {n: v for n, v in words.items() if n.startswith(prefix)}
        assert in_doc == in_code, prefix
    # region sizes: the formulas in the table, evaluated for one layout, against its offsets
    lay = shm.Layout(workers=3, targets=2)
    values = {"W": lay.workers, "T": lay.targets, "slot_words": lay.slot_words}
    sizes = dict(
        re.findall(r"^\| ([A-Z_]+) \| ([^|]+) \| (?:supervisor|worker w) \|", layout, re.M)
    )
    times = "\u00d7"  # the tables write products with a multiplication sign
    formula = {k: eval(v.replace(times, "*"), {}, values) for k, v in sizes.items()}
    assert formula["HEADER"] == shm.HEADER_WORDS == lay.breaker(0)
    assert formula["BREAKERS"] == lay.wctrl(0) - lay.breaker(0)
    assert formula["WCTRL"] == lay.faults - lay.wctrl(0)
    assert formula["FAULTS"] == injection.MAX_FAULTS * injection.FAULT_WORDS
    assert lay.faults + formula["FAULTS"] <= lay.slot(0) and lay.slot(0) % 512 == 0
    assert formula["SLOTS"] == lay.retired - lay.slot(0)
    assert formula["RETIRED"] == lay.warmup(0) - lay.retired
    assert formula["WARMUP"] == lay.warmup(lay.workers) - lay.warmup(0)
    assert formula["WARMUP_RETIRED"] == lay.total_words - lay.warmup(lay.workers)
    slot = _section(doc, "### Stats slot")
    header = dict(re.findall(r"^\| (\d) \| `(\w+)`", slot, re.M))
    assert {n: int(w) for w, n in header.items()} == {
        "WRITER_PID": stats.WRITER_PID,
        "HEARTBEAT": stats.HEARTBEAT,
        "GENERATION": stats.GENERATION,
    }


def _tree_blocks(tree: str) -> dict[str, dict[str, set[str]]]:
    """The Modules tree: package -> subpackage ('' for the root) -> the files it lists."""
    out: dict[str, dict[str, set[str]]] = {}
    package = ""
    for line in tree.splitlines():
        if line and not line.startswith(" "):  # "workers/   the data plane..."
            package = line.split("/")[0]
            out[package] = {"": set()}
            continue
        words = line.split()
        if not words or not package:
            continue
        sub = words[0][:-1] if line.startswith("  ") and words[0].endswith("/") else ""
        if sub and not line.startswith("   "):
            out[package].setdefault(sub, set()).update(w for w in words if "." in w)
        else:
            out[package][""].update(w for w in words if w.endswith(".py"))
    return out


def test_architecture_names_every_module_in_its_table_and_its_tree() -> None:
    section = _section((ROOT / "docs" / "architecture.md").read_text(), "## Modules")
    tree = _tree_blocks(section.split("```", 2)[1])
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    missing, stale = [], []
    for package in ("poolsvc", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            rel = path.relative_to(ROOT)
            sub = rel.parts[1] if len(rel.parts) > 2 else ""
            if f"`{rel}`" not in rows or path.name not in tree[package].get(sub, set()):
                missing.append(str(rel))
        for sub, names in tree[package].items():
            stale += [
                f"{package}/{sub}/{n}" for n in names if not (ROOT / package / sub / n).exists()
            ]
    assert missing == [] and stale == []


def test_the_tree_check_reads_a_subpackage_line() -> None:
    tree = "workers/   the data plane\n  net/   transport.py tls.py\n             what it holds\n"
    tree += "  worker.py   the worker\npoolsvc/   x\n  version.py   v\n"
    assert _tree_blocks(tree) == {
        "workers": {"": {"worker.py"}, "net": {"transport.py", "tls.py"}},
        "poolsvc": {"": {"version.py"}},
    }
