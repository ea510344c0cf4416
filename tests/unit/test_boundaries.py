"""The package boundaries, enforced on the source: imports only run down.

``workers/`` (the data plane) imports nothing of ``poolsvc/`` (the control plane and
the CLIs), and neither imports ``tools/`` (development tools, not installed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FORBIDDEN = {"workers": {"poolsvc", "tools"}, "poolsvc": {"tools"}}


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_run_down(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from poolsvc import config\n    import tools.bench\n")
    assert imported(bad) >= {"poolsvc", "tools"}


# The worker is composed, not stacked ---------------------------------------------------

# A class of workers/ may subclass these (a protocol, a container, an error, a C struct)
# but never another class of workers/: each part is an object behind a small interface.
_ALLOWED_BASES = {"Protocol", "Generic", "Exception", "RuntimeError", "ValueError", "dict"}
_ALLOWED_BASES |= {"Enum", "Structure", "PoolSvcError"}  # PoolSvcError: errors by phase


def bases(path: Path) -> dict[str, list[str]]:
    """Each class of a module -> the names of its bases (subscripts and dots stripped)."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef):
            names = []
            for base in node.bases:
                while isinstance(base, ast.Subscript):
                    base = base.value
                names.append(base.attr if isinstance(base, ast.Attribute) else ast.unparse(base))
            out[node.name] = names
    return out


def test_no_class_in_workers_inherits_from_another_worker_class() -> None:
    offenders = {
        f"{path.name}:{cls}": names
        for path in sorted((ROOT / "workers").rglob("*.py"))
        for cls, names in bases(path).items()
        if set(names) - _ALLOWED_BASES
    }
    assert offenders == {}


def test_the_inheritance_rule_sees_a_layer(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("class Worker(Responses):\n    pass\nclass P(typing.Protocol[T]):\n    pass\n")
    assert bases(bad) == {"Worker": ["Responses"], "P": ["Protocol"]}


def socket_calls(path: Path) -> list[str]:
    """Calls of a method of a connection's socket (``conn.sock.send(...)``)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "sock"
    ]


def test_only_the_transport_touches_a_pooled_socket() -> None:
    offenders = {
        path.name: calls
        for path in sorted((ROOT / "workers").rglob("*.py"))
        if path.name != "transport.py" and (calls := socket_calls(path))
    }
    assert offenders == {}


def test_the_socket_rule_sees_a_call(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f(conn):\n    conn.sock.send(b'x')\n    t.probe(conn.sock)\n")
    assert socket_calls(bad) == ["conn.sock.send"]


# No import circle inside a package -----------------------------------------------------


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (anywhere in its source,
    a ``TYPE_CHECKING`` block included: a circle for the type checker is one too)."""
    base = package.name
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{a.name}" for a in node.names]
                deps |= {n for n in [node.module, *names] if n in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = {d for d in deps if d != name and d.split(".")[0] == base}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` (empty: none)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


@pytest.mark.parametrize("package", ["poolsvc", "workers", "tools"])
def test_no_import_circle(package: str) -> None:
    assert cycle(import_graph(ROOT / package)) == []


def test_the_circle_rule_sees_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "poolsvc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "commands.py").write_text("from poolsvc import status\n")
    typed = "if TYPE_CHECKING:\n    from poolsvc.supervisor import S\n"
    (pkg / "status.py").write_text(typed)
    (pkg / "supervisor.py").write_text("from poolsvc.commands import dispatch\n")
    found = cycle(import_graph(pkg))
    assert found[0] == found[-1] and set(found) == {
        "poolsvc.commands",
        "poolsvc.status",
        "poolsvc.supervisor",
    }


# Subpackages are layers ----------------------------------------------------------------

# Bottom to top. A module of a subpackage imports its own subpackage and those below it,
# never one above; the modules at a package's root (the worker, its process, its upkeep;
# the CLI entry points) compose the subpackages and may import any. ``poolsvc.version`` is
# the bottom of the control plane (one fact, imported by everything that prints it).
LAYERS = {
    "workers": ["shared", "net", "pool", "loop", "lane", "exchange"],
    "poolsvc": [
        "version", "config", "metrics", "report", "ctl", "library", "adapters", "target",
        "arbiter", "churn", "cli",
    ],
}  # fmt: skip


def upward_imports(top: Path, order: list[str]) -> dict[str, list[str]]:
    """module path -> the modules it imports from a subpackage above its own."""
    out: dict[str, list[str]] = {}
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(top).parts
        layer = parts[0].removesuffix(".py")
        if layer not in order:
            continue  # a root module: it composes the layers
        mine = order.index(layer)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
                if "." not in node.module:  # from workers import exchange
                    names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                above = len(bits) > 1 and bits[1] in order and order.index(bits[1]) > mine
                if bits[0] == top.name and above:
                    out.setdefault(str(path.relative_to(top.parent)), []).append(name)
    return out


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_each_subpackage_imports_only_those_below_it(package: str) -> None:
    assert upward_imports(ROOT / package, LAYERS[package]) == {}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_the_layers_are_the_tree(package: str) -> None:
    """Every subpackage has its place in the order, and every place is a subpackage."""
    top = ROOT / package
    found = {p.name for p in top.iterdir() if (p / "__init__.py").exists()}
    found |= {p.stem for p in top.glob("*.py") if p.stem in LAYERS[package]}
    assert found == set(LAYERS[package])


def test_the_layer_rule_sees_an_upward_import(tmp_path: Path) -> None:
    top = tmp_path / "workers"
    (top / "pool").mkdir(parents=True)
    (top / "pool" / "shard.py").write_text("from workers.exchange.dialer import Dialer\n")
    (top / "worker.py").write_text("from workers.exchange import dialer\n")  # a root module
    order = ["shared", "pool", "exchange"]
    assert upward_imports(top, order) == {"workers/pool/shard.py": ["workers.exchange.dialer"]}


def test_no_two_modules_share_a_name() -> None:
    """A room is found by its name: no module name is used twice in the product."""
    seen: dict[str, list[str]] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name not in ("__init__.py", "__main__.py"):
                seen.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


# One meter writes the request path's counters ------------------------------------------

_STORES = {"s", "w", "slot", "words"}  # what a slot or the region is called where it is held
# The layout's owners write their own words (shm: the supervisor's region; slotstats: a
# slot's header; admission: a breaker trial's result), the meter every counter of the
# request path, the upkeep the gauges and the heartbeat it publishes each tick.
_WRITERS = {"shared/meter.py", "shared/shm.py", "shared/slotstats.py", "shared/admission.py"}
_WRITERS |= {"upkeep.py"}


def slot_writes(path: Path) -> list[int]:
    """Lines of ``path`` that store into a slot or the region (``s[...] += 1``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Subscript):
                held = target.value
                name = held.id if isinstance(held, ast.Name) else getattr(held, "attr", None)
                if name in _STORES:
                    lines.append(node.lineno)
    return lines


def test_only_the_meter_writes_the_request_paths_counters() -> None:
    top = ROOT / "workers"
    offenders = {
        str(path.relative_to(top)): lines
        for path in sorted(top.rglob("*.py"))
        if str(path.relative_to(top)) not in _WRITERS and (lines := slot_writes(path))
    }
    assert offenders == {}


def test_the_meter_rule_sees_a_write(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f(self, s):\n    self.s[3] += 1\n    s[4] = 0\n    x[1] = 2\n")
    assert slot_writes(bad) == [2, 3]
