"""The package's layers: which subpackage may import which, no import cycle, torch-free release tools."""

from __future__ import annotations

import ast
import graphlib
import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pytest_layername"
ROOT = PACKAGE.parents[1]
#: layer -> the layers its modules may import (the module itself counts as its own layer)
ALLOWED = {
    "core.names": set(),
    "core": {"core", "core.names"},
    "harness": {"core", "core.names", "harness"},
    "compile": {"core", "core.names", "harness", "compile"},
    "fusion": {"core", "core.names", "harness", "compile", "fusion"},
    "checks": {"core", "core.names", "harness", "compile", "checks"},
    "bench": {"core", "core.names", "harness", "compile", "bench"},
    "testing": {"core", "core.names", "harness", "testing"},
    "release": {"release", "core.names"},
    "plugin": {"core", "core.names", "harness", "compile", "fusion", "checks", "release", "plugin"},
    "docs": {"core.names", "plugin", "release", "docs"},
    "cli": {
        "core",
        "core.names",
        "harness",
        "compile",
        "fusion",
        "checks",
        "bench",
        "testing",
        "release",
        "docs",
        "cli",
    },
    "__main__": {"cli"},
    "__init__": set(),
    "_exports": set(),
}
#: modules that import nothing of the package and that every layer may import
SHARED = {"_exports"}
#: modules that must import without torch (plugin entry point, release tools, CLI front)
TORCH_FREE = [
    "pytest_layername",
    "pytest_layername.cli",  # imports the chosen command's module by name, nothing at load
    "pytest_layername.cli.matrix",
    "pytest_layername.cli.cell",
    "pytest_layername.cli.gate",
    "pytest_layername.cli.fault_table",
    "pytest_layername.compile.cache_events",  # what an engine adapter names (LogReason): standard library only
    "pytest_layername.core",
    "pytest_layername.core.names",
    "pytest_layername.fusion",  # an engine's fusion tests report through fusion.log
    "pytest_layername.fusion.log",
    "pytest_layername.plugin",
    "pytest_layername.plugin.options",
    "pytest_layername.plugin.properties",
    "pytest_layername.plugin.captured_logs",
    "pytest_layername.plugin.trace",
    "pytest_layername.plugin.reporting",
    "pytest_layername.release",
    *(f"pytest_layername.release.{p.stem}" for p in sorted((PACKAGE / "release").glob("*.py"))),
    # the docs generator imports torch only to render a page of something that needs it (the command line)
    "pytest_layername.cli.docs",
    *(f"pytest_layername.docs.{p.stem}" for p in sorted((PACKAGE / "docs").glob("*.py"))),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports there never run)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(path: Path) -> set[str]:
    """Package modules ``path`` imports when it runs (function bodies included), relative to the package."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            names = [node.module] if node.module else [a.name for a in node.names]
            found.update(".".join([*base, n]) for n in names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.update(m.removeprefix("pytest_layername.") for m in modules if m.startswith("pytest_layername."))
    return found


def layer_of(module: str) -> str:
    return "core.names" if module == "core.names" else module.split(".")[0]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (the shipped suite, which may import anything, left out)."""
    paths = [p for p in package.rglob("*.py") if "suite" not in p.relative_to(package).parts]
    return {module_name(p): imports_of(p) for p in paths}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        allowed = ALLOWED[layer_of(module)]
        for target in sorted(targets):
            if target in SHARED:
                continue
            if layer_of(target) not in allowed and not (layer_of(target) == "core" and "core" in allowed):
                bad.append(f"{module} imports {target}")
    return bad


def test_every_module_belongs_to_a_known_layer():
    assert {layer_of(m) for m in import_graph()} <= set(ALLOWED)


def test_imports_go_one_way():
    assert layer_violations(import_graph()) == []


def test_only_the_entry_point_imports_the_cli():
    """The command line may import every layer; no layer but ``__main__`` imports it (library code has no CLI)."""
    assert sorted(layer for layer, allowed in ALLOWED.items() if "cli" in allowed) == ["__main__", "cli"]
    graph = import_graph()
    importers = {m for m, targets in graph.items() if any(layer_of(t) == "cli" for t in targets)}
    assert {layer_of(m) for m in importers} == {"__main__", "cli"}
    assert layer_violations({**graph, "release.gate": {"cli.gate"}}) == ["release.gate imports cli.gate"]


def test_a_backward_import_is_a_violation():
    graph = {**import_graph(), "release.gate": {"core.compat"}, "core.modes": {"compile.stats"}}
    assert layer_violations(graph) == ["core.modes imports compile.stats", "release.gate imports core.compat"]


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle, if the module graph has any (packages' own ``__init__`` imports count as edges)."""
    try:
        graphlib.TopologicalSorter({m: {t for t in ts if t in graph} for m, ts in graph.items()}).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found():
    graph = {**import_graph(), "compile.stats": {"compile.session"}}  # session imports stats: the old cycle
    assert set(cycles(graph)) >= {"compile.stats", "compile.session"}


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (imported {name})")
sys.meta_path.insert(0, NoTorch())
"""


def run_without_torch(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    script = BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_imports_without_torch(module):
    done = run_without_torch(
        f"import importlib, sys; importlib.import_module({module!r}); assert 'torch' not in sys.modules"
    )
    assert done.returncode == 0, done.stderr


def test_blocking_torch_is_effective():
    done = run_without_torch("import pytest_layername.core.compat")
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_gate_and_matrix_commands_run_without_torch(tmp_path):
    cli = "import sys; from pytest_layername.cli import main; sys.exit(main(sys.argv[1:]))"
    done = run_without_torch(cli, "gate", "--matrix", "matrix.toml", str(tmp_path))
    assert done.returncode == 1, done.stderr  # fails closed: no reports
    assert "ImportError" not in done.stderr and "FAIL" in done.stdout + done.stderr
    done = run_without_torch(cli, "matrix", "--matrix", "matrix.toml", "--github")
    assert done.returncode == 0 and '"include"' in done.stdout, done.stderr


def test_version_and_help_without_torch_or_markup():
    """``layername --version`` prints the installed distribution's version; help shows plain text, not reST."""
    cli = "import sys; from pytest_layername.cli import main; sys.exit(main(sys.argv[1:]))"
    done = run_without_torch(cli, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"layername {importlib.metadata.version('pytest-layername')}"
    done = run_without_torch(cli, "--help")
    assert done.returncode == 0 and "usage: layername" in done.stdout, done.stderr
    assert "``" not in done.stdout and ":class:" not in done.stdout


def test_noxfile_loads_without_torch():
    pytest.importorskip("nox")
    done = run_without_torch("import runpy; runpy.run_path('noxfile.py')")
    assert done.returncode == 0, done.stderr


SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def test_every_subpackage_lists_its_public_names_and_each_resolves():
    """``__all__`` in every subpackage; each name is there on first use (a subprocess: some import torch)."""
    code = f"""
    import importlib, json, types

    def _stable(package, n):
        first = getattr(package, n, None)
        return first is not None and not isinstance(first, types.ModuleType) and getattr(package, n) is first

    out = {{}}
    for name in {["pytest_layername", *(f"pytest_layername.{s}" for s in SUBPACKAGES)]!r}:
        package = importlib.import_module(name)
        # each name resolves, and to the same object again: one named like its submodule would turn into
        # that submodule once imported
        out[name] = [n for n in package.__all__ if not _stable(package, n)]
        try:
            package.no_such_name
        except AttributeError:
            pass
        else:
            out[name].append("no_such_name resolved")
    print(json.dumps(out))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    unresolved = json.loads(done.stdout.splitlines()[-1])
    assert set(unresolved) == {"pytest_layername", *(f"pytest_layername.{s}" for s in SUBPACKAGES)}
    assert {name: bad for name, bad in unresolved.items() if bad} == {}
    assert "suite" in SUBPACKAGES and "release" in SUBPACKAGES  # the glob found the subpackages


def test_a_missing_export_is_found():
    from pytest_layername._exports import lazy_exports

    names, getattr_ = lazy_exports("pytest_layername.release", {"load_matrix": "matrix", "gone": "matrix"})
    assert names == ["gone", "load_matrix"] and callable(getattr_("load_matrix"))
    with pytest.raises(AttributeError, match="gone"):
        getattr_("gone")
