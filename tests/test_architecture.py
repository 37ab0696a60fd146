"""The layout's rules (docs/architecture.md): no import cycle, small modules and classes, the
torch-free layers stay torch-free, and strategy names are compared only where strategies live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_NAMES = {"sgd", "sam", "rst", "async_sam", "sampa"}


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


# "sgd" there names a base optimizer family (MSAM's radius depends on it), not the strategy
FAMILY_NAMES = {"hetsam.evidence.model", "hetsam.defaults"}


def test_strategy_names_are_literals_only_where_strategies_live():
    found = []
    for name, path in _modules().items():
        if name.startswith("hetsam.strategies") or name in FAMILY_NAMES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in BUILTIN_NAMES:
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


def test_every_package_folder_is_shipped():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hetsam").rglob("*.py")}
    assert folders <= listed, sorted(folders - listed)
