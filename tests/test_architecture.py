"""The layout's rules (docs/architecture.md): no import cycle, packages in the documented layer
order, small modules and classes, the torch-free layers stay torch-free, and strategy names are
compared only where strategies live."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hetsam import strategies

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    """Module name -> file, for hetsam/ and simulator/ (shipped as hetsam.simulator)."""
    out = {}
    for path in sorted((ROOT / "hetsam").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "simulator").glob("*.py")):
        stem = path.stem
        out["hetsam.simulator" if stem == "__init__" else f"hetsam.simulator.{stem}"] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every hetsam module ``name`` imports, at any depth of the file (function-level imports
    included). ``from pkg import sub`` of a submodule counts as importing ``pkg.sub``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs)
            if len(subs) < len(node.names):  # some names come from the module itself
                found.add(base)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for m in graph:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


def _package(name: str, path: Path) -> str:
    """The package a module belongs to: ``hetsam.<folder>`` (sub-folders included), or ``hetsam`` for
    the top-level modules. ``python -m hetsam`` (``__main__``) is the command line's."""
    if name == "hetsam.__main__":
        return "hetsam.cli"
    parts = name.split(".")
    if len(parts) == 2 and path.name != "__init__.py":
        return "hetsam"
    return ".".join(parts[:2])


def _documented_layers() -> list[set[str]]:
    """The packages of each row of the table under "The layers, lowest first" in the architecture doc."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The layers, lowest first", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        if line.startswith("| `"):
            folders = re.findall(r"`([a-z_]+)/`", line.split("|")[1])
            layers.append({"hetsam" if f == "hetsam" else f"hetsam.{f}" for f in folders})
    return layers


def _upward(edges: dict, layers: list[set[str]]) -> list[str]:
    """The package edges ``(a, b)`` against the layer order: b on a higher row than a (a package no
    row lists is on the top row)."""
    level = {pkg: i for i, row in enumerate(layers) for pkg in row}
    top = len(layers)
    return [f"{a} (row {level.get(a, top)}) imports {b} (row {level.get(b, top)}): {why[0]}"
            for (a, b), why in sorted(edges.items()) if level.get(b, top) > level.get(a, top)]


def _cycle(edges: dict) -> list[str] | None:
    """A cycle of the package graph, as a path that ends where it starts; None if there is none."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    done: set[str] = set()

    def cycle_from(v: str, path: list[str]) -> list[str] | None:  # depth-first search
        if v in path:
            return path[path.index(v):] + [v]
        if v in done:
            return None
        for w in sorted(graph.get(v, ())):
            found = cycle_from(w, path + [v])
            if found:
                return found
        done.add(v)
        return None

    return next((c for c in (cycle_from(v, []) for v in sorted(graph)) if c), None)


def test_packages_import_only_packages_below_them():
    """Every import statement anywhere in a module (in functions too) goes to its own package or to
    a package of a lower row of the doc's table; a package the table does not list is a top layer
    that nothing listed imports. The package graph has no cycle either."""
    layers = _documented_layers()
    assert len(layers) >= 10 and all(layers), layers
    mods = _modules()
    packages = {m: _package(m, p) for m, p in mods.items()}
    missing = sorted(pkg for row in layers for pkg in row if pkg not in packages.values())
    assert not missing, f"docs/architecture.md lists folders that do not exist: {missing}"
    edges: dict[tuple[str, str], list[str]] = {}
    for m, p in mods.items():
        for target in _imports(m, p, set(mods)):
            a, b = packages[m], packages[target]
            if a != b:
                edges.setdefault((a, b), []).append(f"{m} -> {target}")
    upward = _upward(edges, layers)
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(upward)
    cycle = _cycle(edges)
    assert cycle is None, f"package cycle: {' -> '.join(cycle)}: {edges[(cycle[0], cycle[1])][0]}"


def test_the_layer_rule_can_fail(tmp_path):
    """The checks above see what they claim to: an import inside a function, an import up the
    table, an import of an unlisted package, and a cycle."""
    mods = _modules()
    module = tmp_path / "search.py"
    module.write_text("def f():\n    if True:\n        from hetsam.simulator import simulate\n")
    assert _imports("hetsam.planning.search", module, set(mods)) == {"hetsam.simulator"}
    assert _package("hetsam.strategies.sam.rule", mods["hetsam.strategies.sam.rule"]) == "hetsam.strategies"
    assert _package("hetsam.errors", mods["hetsam.errors"]) == "hetsam"
    layers = _documented_layers()
    level = {pkg: i for i, row in enumerate(layers) for pkg in row}
    assert level["hetsam"] == 0 and level["hetsam.simulator"] < level["hetsam.planning"] < level["hetsam.autosam"]
    why = ["m -> n"]
    assert _upward({("hetsam.simulator", "hetsam.planning"): why}, layers)
    assert not _upward({("hetsam.planning", "hetsam.simulator"): why}, layers)
    assert _upward({("hetsam.cost", "hetsam.unlisted"): why}, layers)
    assert not _upward({("hetsam.unlisted", "hetsam.cli"): why}, layers)
    assert _cycle({("a", "b"): why, ("b", "c"): why, ("c", "a"): why}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"): why, ("b", "c"): why}) is None


def test_modules_and_classes_stay_small():
    too_big = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 400:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                too_big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, too_big


# words that mean something else there: "sgd", a base optimizer family (MSAM's radius depends on
# it); "interval", a confidence interval of the step periods
OTHER_MEANINGS = {"hetsam.evidence.model": {"sgd"}, "hetsam.defaults": {"sgd"},
                  "hetsam.autosam.controller": {"interval"}}


def test_strategy_names_are_literals_only_where_strategies_live():
    names = set(strategies.names())
    assert {"sgd", "sam", "msam"} <= names  # the registry's names, built-in and registered
    found = []
    for name, path in _modules().items():
        if name.startswith("hetsam.strategies"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names - OTHER_MEANINGS.get(name, set()):
                found.append(f"{name}:{node.lineno} {node.value!r}")
    assert not found, found


def test_code_cites_only_files_of_the_repository():
    cites = [name for name, path in _modules().items() if "DESIGN.md" in path.read_text()]
    assert not cites, cites
    assert (ROOT / "docs" / "architecture.md").is_file()


def test_torch_free_layers_import_without_torch():
    free = [m for m in _modules() if m.count(".") and m.split(".")[1] in ("hardware", "cost", "evidence", "planning", "simulator")
            or m in ("hetsam", "hetsam.io", "hetsam.defaults", "hetsam._checks", "hetsam.errors",
                     "hetsam.profiling.schema", "hetsam.profiling.stats", "hetsam.profiling.checker",
                     "hetsam.profiling.merge", "hetsam.strategies", "hetsam.strategies.registry",
                     "hetsam.strategies.spec")
            or (m.startswith("hetsam.strategies.") and m.count(".") == 2 and not m.endswith(".rule"))]
    free = [m for m in free if m not in ("hetsam.hardware.gpus",)]  # GPU probing imports torch when a GPU is there
    code = ("import importlib, sys\n"
            f"for m in {free!r}: importlib.import_module(m)\n"
            "from hetsam import strategies\n"
            "for s in strategies.specs(): s.simulation  # the specs, not the rules\n"
            "bad = [m for m in ('torch', 'numpy', 'scipy', 'matplotlib') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(free) > 30


@pytest.mark.parametrize("module", ["hetsam.bench"])
def test_the_benchmark_harness_is_not_imported_by_the_library(module):
    users = [name for name, path in _modules().items()
             if not name.startswith(module) and name != "hetsam.cli.bench" and module in path.read_text()
             and any(module in line for line in path.read_text().splitlines() if "import" in line)]
    assert not users, users


@pytest.mark.slow  # builds a wheel: `-m 'not slow'` skips it (pyproject.toml)
def test_the_wheel_ships_every_package_folder_and_nothing_else(tmp_path):
    """The packages are found, not listed (``setup.py``): a wheel built from a copy of the source
    holds every file of hetsam/, simulator/ as hetsam.simulator and profiles/ as
    hetsam.reference_profiles, and nothing else at its top level."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("hetsam", "simulator", "profiles"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("hetsam-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in shipped if ".dist-info/" not in n} == {"hetsam"}
    expected = {f"hetsam/{p.relative_to(src / 'hetsam').as_posix()}" for p in (src / "hetsam").rglob("*")
                if p.is_file() and p.suffix in (".py", ".json")}
    expected |= {f"hetsam/simulator/{p.name}" for p in (src / "simulator").glob("*.py")}
    expected |= {f"hetsam/reference_profiles/{p.name}" for p in (src / "profiles").glob("*.json")}
    assert len(expected) > 150 and not expected - shipped, sorted(expected - shipped)
