"""``layername audit --walk``: a temporary engine-like package tree, audited as text, JSON and SARIF."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import torch

from pytest_layername.checks.audit import OPAQUE_RULE, STR_RULE
from pytest_layername.checks.audit_walk import Site, display_path, op_site, walk_packages
from pytest_layername.cli import main
from pytest_layername.core.compat import opaque_support
from pytest_layername.testing import broken

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "audit.yml"
requires_hoisting = pytest.mark.skipif(
    not opaque_support().supported, reason=f"no hoisted opaque types: {opaque_support().reason}"
)

OPAQUE_CLASS = """
class {name}(OpaqueBase):
    def __init__(self, value: str) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, {name}) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __fx_repr__(self):
        return f"{name}({{self.value!r}})", {{"{name}": {name}}}
"""

OP_HEADER = """\
import torch
from torch._library.opaque_object import register_opaque_type
from torch._opaque_base import OpaqueBase
"""


class Engine:
    """A package tree shaped like an inference engine's, written under ``root`` as package ``name``.

    ``models.llama`` registers ``still_str`` (``layer_name: str``), ``layers.attention.hoisted`` a hoisted
    opaque op, ``layers.attention.baked`` one typed with an opaque class registered without hoisting
    (with string annotations), ``platforms.cuda`` fails to import, ``tests.test_ops`` registers an op in
    ``<name>_tests``, and ``__main__`` would leave a marker file if it ever ran.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = "lnwalk_" + hashlib.sha256(str(root).encode()).hexdigest()[:10]
        self.files: dict[str, str] = {}
        ns = self.name
        self._write("__init__.py", 'print("engine banner: loading kernels")\n')
        self._write("__main__.py", "from pathlib import Path\n\nPath(__file__).with_name('MAIN_RAN').touch()\n")
        for package in ("models", "layers", "layers/attention", "platforms", "tests"):
            self._write(f"{package}/__init__.py", "")
        self._write(
            "models/llama.py",
            f"{OP_HEADER}\n\n@torch.library.custom_op('{ns}::still_str', mutates_args=())\n"
            "def still_str(x: torch.Tensor, layer_name: str) -> torch.Tensor:\n    return x * 1.0\n",
        )
        self._write(
            "layers/attention/hoisted.py",
            f"{OP_HEADER}{OPAQUE_CLASS.format(name='HoistedName')}\n\n"
            "register_opaque_type(HoistedName, typ='value', hoist=True)\n\n\n"
            f"@torch.library.custom_op('{ns}::hoisted', mutates_args=())\n"
            "def hoisted(x: torch.Tensor, layer_name: HoistedName) -> torch.Tensor:\n    return x * 1.0\n",
        )
        self._write(
            "layers/attention/baked.py",
            f"from __future__ import annotations\n\n{OP_HEADER}{OPAQUE_CLASS.format(name='BakedName')}\n\n"
            "register_opaque_type(BakedName, typ='value')\n\n\n"
            f"@torch.library.custom_op('{ns}::baked', mutates_args=())\n"
            "def baked(x: torch.Tensor, layer_name: BakedName) -> torch.Tensor:\n    return x * 1.0\n",
        )
        self._write("platforms/cuda.py", f"import {ns}_missing_gpu_ext  # a GPU extension this machine lacks\n")
        self._write(
            "tests/test_ops.py",
            f"{OP_HEADER}\n\n@torch.library.custom_op('{ns}_tests::from_test', mutates_args=())\n"
            "def from_test(x: torch.Tensor, layer_name: str) -> torch.Tensor:\n    return x * 1.0\n",
        )

    def _write(self, relative: str, text: str) -> None:
        path = self.root / self.name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.files[relative] = text

    def path(self, relative: str) -> str:
        """``relative`` as the audit shows it from ``root`` (the working directory)."""
        return f"{self.name}/{relative}"

    def line(self, relative: str, needle: str) -> int:
        return next(i for i, text in enumerate(self.files[relative].splitlines(), 1) if needle in text)

    def module(self, relative: str) -> str:
        return f"{self.name}.{relative.removesuffix('.py').replace('/', '.')}"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    tree = Engine(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tree
    for name in [m for m in sys.modules if m.split(".")[0] in (tree.name, f"{tree.name}_tests")]:
        del sys.modules[name]


def _imported(e: Engine, tests: bool = False) -> list[str]:
    modules = ["", ".layers", ".layers.attention", ".layers.attention.baked", ".layers.attention.hoisted"]
    modules += [".models", ".models.llama", ".platforms"] + ([".tests", ".tests.test_ops"] if tests else [])
    return [e.name + m for m in modules]


def _normalise_seconds(text: str) -> str:
    return re.sub(r"\d+\.\d\d s", "N s", text)


@requires_hoisting
def test_walk_text_report(engine, capsys):
    e = engine
    assert main(["audit", "--walk", e.name]) == 0
    captured = capsys.readouterr()
    llama, baked = "models/llama.py", "layers/attention/baked.py"
    expected = f"""\
        walk {e.name}: 8 module(s) imported, 1 failed, 2 skipped in N s
          import failed: {e.name}.platforms.cuda: ModuleNotFoundError: No module named '{e.name}_missing_gpu_ext'
          skipped: {e.name}.__main__, {e.name}.tests
        namespace {e.name}: 3 op(s), 1 take a layer name as str, 1 as an unhoisted opaque type
          {e.name}::baked: argument 'layer_name' is PyObject ({e.module(baked)}.BakedName: opaque value type \
registered without hoist=True)  [{e.name}::baked(Tensor x, PyObject layer_name) -> Tensor]
            defined at {e.path(baked)}:{e.line(baked, "@torch.library.custom_op")} ({e.module(baked)})
          {e.name}::still_str: argument 'layer_name' is str  [{e.name}::still_str(Tensor x, str layer_name) -> Tensor]
            defined at {e.path(llama)}:{e.line(llama, "@torch.library.custom_op")} ({e.module(llama)})
          fix: type the argument as the hoisted LayerName (LayerNameType) and pass _encode_layer_name(...)
          fix: register the class with register_opaque_type(cls, typ="value", hoist=True)
        summary: 8 module(s) imported, 1 failed; 1 namespace(s), 3 op(s) audited; 2 finding(s); audit N s, walk N s
        """
    assert _normalise_seconds(captured.out) == textwrap.dedent(expected)
    assert "engine banner: loading kernels" in captured.err  # what modules print goes to stderr, not lost
    assert not (e.root / e.name / "MAIN_RAN").exists()  # __main__ was not run


@requires_hoisting
def test_walk_json_report(engine, capsys):
    e = engine
    assert main(["audit", "--walk", e.name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # the banner printed on import did not corrupt it
    walk = data["walk"]
    assert walk["seconds"] >= 0 and data["summary"]["walk_seconds"] == walk["seconds"]
    assert {k: v for k, v in walk.items() if k != "seconds"} == {
        "packages": [e.name],
        "imported": _imported(e),
        "failed": [
            {
                "module": f"{e.name}.platforms.cuda",
                "error": "ModuleNotFoundError",
                "message": f"No module named '{e.name}_missing_gpu_ext'",
                "path": str((e.root / e.path("platforms/cuda.py")).resolve()),
            }
        ],
        "skipped": [f"{e.name}.__main__", f"{e.name}.tests"],
    }
    assert {k: v for k, v in data["summary"].items() if not k.endswith("seconds")} == {
        "modules_imported": 8,
        "modules_failed": 1,
        "namespaces": 1,
        "ops": 3,
        "findings": 2,
    }
    (namespace,) = data["namespaces"]
    assert namespace["ops"] == [f"{e.name}::baked", f"{e.name}::hoisted", f"{e.name}::still_str"]

    def site(relative: str) -> dict[str, object]:
        path = str((e.root / e.path(relative)).resolve())
        line = e.line(relative, "@torch.library.custom_op")
        return {"path": path, "line": line, "module": e.module(relative), "kind": "function"}

    baked, llama = "layers/attention/baked.py", "models/llama.py"
    assert namespace["findings"] == [
        {
            "rule": OPAQUE_RULE,
            "op": f"{e.name}::baked",
            "argument": "layer_name",
            "type": "PyObject",
            "schema": f"{e.name}::baked(Tensor x, PyObject layer_name) -> Tensor",
            "site": site(baked),
            "opaque_class": f"{e.module(baked)}.BakedName",
        },
        {
            "rule": STR_RULE,
            "op": f"{e.name}::still_str",
            "argument": "layer_name",
            "type": "str",
            "schema": f"{e.name}::still_str(Tensor x, str layer_name) -> Tensor",
            "site": site(llama),
            "opaque_class": None,
        },
    ]
    assert data["opaque_check"] == {"available": True, "reason": None}
    assert data["findings"] == 2


def _sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def test_sarif_schema_rejects_a_broken_log():
    """Negative control: the kept schema really constrains a log (version, levels, unknown keys)."""
    validator = _sarif_validator()
    good = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "layername"}}, "results": []}]}
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {**good, "version": "2.0.0"},
        {**good, "runs": [{"tool": {"driver": {}}}]},
        {**good, "runs": [{**good["runs"][0], "results": [{"message": {"text": "x"}, "level": "fatal"}]}]},
        {**good, "unknown": 1},
    ):
        assert list(validator.iter_errors(bad)), bad


@requires_hoisting
@pytest.mark.parametrize("fail_on_import_errors", [False, True])
def test_walk_sarif_report(engine, tmp_path, capsys, fail_on_import_errors):
    e = engine
    out = tmp_path / "audit.sarif"
    flag = ["--fail-on-import-errors"] if fail_on_import_errors else []
    assert main(["audit", "--walk", e.name, "--sarif", str(out), *flag]) == int(fail_on_import_errors)
    capsys.readouterr()
    log = json.loads(out.read_text(encoding="utf-8"))
    assert list(_sarif_validator().iter_errors(log)) == []
    (run,) = log["runs"]
    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": tmp_path.resolve().as_uri() + "/"}}
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [STR_RULE, OPAQUE_RULE]
    results = [
        (
            r["ruleId"],
            r["ruleIndex"],
            r["locations"][0]["physicalLocation"]["artifactLocation"],
            r["locations"][0]["physicalLocation"]["region"],
            r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        )
        for r in run["results"]
    ]
    baked, llama = "layers/attention/baked.py", "models/llama.py"
    assert results == [
        (
            OPAQUE_RULE,
            1,
            {"uri": e.path(baked), "uriBaseId": "%SRCROOT%"},
            {"startLine": e.line(baked, "@torch.library.custom_op")},
            f"{e.name}::baked",
        ),
        (
            STR_RULE,
            0,
            {"uri": e.path(llama), "uriBaseId": "%SRCROOT%"},
            {"startLine": e.line(llama, "@torch.library.custom_op")},
            f"{e.name}::still_str",
        ),
    ]
    assert f"({e.module(baked)}.BakedName)" in run["results"][0]["message"]["text"]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is not fail_on_import_errors
    (notification,) = invocation["toolExecutionNotifications"]
    assert notification["level"] == ("error" if fail_on_import_errors else "warning")
    assert notification["message"]["text"] == (
        f"cannot import {e.name}.platforms.cuda: ModuleNotFoundError: No module named '{e.name}_missing_gpu_ext'"
    )
    location = notification["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": e.path("platforms/cuda.py"), "uriBaseId": "%SRCROOT%"}


@requires_hoisting
def test_walk_exit_codes(engine, capsys):
    """Findings fail the run only with --strict, the import failure only with --fail-on-import-errors."""
    walk = ["audit", "--walk", engine.name]
    assert main(walk) == 0
    assert main([*walk, "--strict"]) == 1
    assert main([*walk, "--fail-on-import-errors"]) == 1
    (engine.root / engine.name / "platforms" / "cuda.py").unlink()  # negative control: nothing fails to import
    assert main([*walk, "--fail-on-import-errors"]) == 0
    assert main([*walk, "--strict"]) == 1
    assert "0 failed;" in capsys.readouterr().out


@requires_hoisting
def test_walk_includes_tests_only_when_asked(engine, capsys):
    e = engine
    assert main(["audit", "--walk", e.name, "--include-tests", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["walk"]["imported"] == _imported(e, tests=True)
    assert data["walk"]["skipped"] == [f"{e.name}.__main__"]
    assert [n["namespace"] for n in data["namespaces"]] == [e.name, f"{e.name}_tests"]
    assert [f["op"] for f in data["namespaces"][1]["findings"]] == [f"{e.name}_tests::from_test"]
    assert not (e.root / e.name / "MAIN_RAN").exists()


@requires_hoisting
def test_walk_with_given_namespace_audits_only_it(engine, capsys):
    e = engine
    assert main(["audit", "--walk", e.name, "--include-tests", "--namespace", f"{e.name}_tests", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [n["namespace"] for n in data["namespaces"]] == [f"{e.name}_tests"]
    assert data["summary"]["findings"] == 1


@requires_hoisting
def test_walk_without_hoisting_says_the_opaque_check_was_skipped(engine, capsys, monkeypatch):
    """On a torch without should_hoist the unhoisted-opaque check is skipped, and the report says so."""
    import torch._library.opaque_object as registry

    monkeypatch.delattr(registry, "should_hoist")
    assert main(["audit", "--walk", engine.name]) == 0
    out = capsys.readouterr().out
    assert f"note: unhoisted-opaque check skipped: torch {torch.__version__} cannot hoist opaque types" in out
    assert "1 take a layer name as str, 0 as an unhoisted opaque type" in out
    assert "2 finding(s)" not in out and "1 finding(s)" in out


def test_walk_api_records_failures_and_keeps_going(tmp_path, monkeypatch):
    """walk_packages without torch ops: a module raising SystemExit on import is a failure, not an exit."""
    package = tmp_path / "lnwalk_plain"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a_exits.py").write_text("import sys\nsys.exit('no config')\n")
    (package / "b_raises.py").write_text("raise RuntimeError('CUDA driver too old\\nsecond line')\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c_fine.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        result = walk_packages(["lnwalk_plain"])
    finally:
        for name in [m for m in sys.modules if m.startswith("lnwalk_plain")]:
            del sys.modules[name]
    assert result.imported == ["lnwalk_plain", "lnwalk_plain.sub", "lnwalk_plain.sub.c_fine"]
    assert [str(f) for f in result.failed] == [
        "lnwalk_plain.a_exits: SystemExit: no config",
        "lnwalk_plain.b_raises: RuntimeError: CUDA driver too old",
    ]
    assert result.seconds > 0


def test_library_define_op_site_is_the_library(tmp_path, monkeypatch):
    """Ops from Library.define have no Python function: their site is where the Library was created."""
    namespace = "lnwalk_lib_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]
    (tmp_path / f"{namespace}.py").write_text(
        f"import torch\n\nLIB = torch.library.Library({namespace!r}, 'DEF')\n"
        "LIB.define('legacy(Tensor x, str layer_prefix) -> Tensor')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(namespace)
    try:
        site = op_site(f"{namespace}::legacy")
    finally:
        del sys.modules[namespace]
    assert site == Site(str((tmp_path / f"{namespace}.py").resolve()), 3, namespace, "library")
    assert op_site("aten::add.Tensor") is None  # torch's own C++ ops: no site on this machine


def _workflow_audit_arguments() -> list[str]:
    """The arguments of the ``layername audit`` step of .github/workflows/audit.yml."""
    (command,) = [
        line.split("run:", 1)[1].strip()
        for line in WORKFLOW.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("run: layername audit")
    ]
    words = shlex.split(command)
    assert words[:2] == ["layername", "audit"], command
    return words[2:]


def test_workflow_audit_of_this_package_finds_the_broken_op_only(tmp_path):
    """The CI workflow's audit in a fresh process: no import failure, the deliberately broken op and nothing else."""
    args = _workflow_audit_arguments()
    assert "--walk" in args and "--sarif" in args
    sarif = tmp_path / "audit.sarif"
    args[args.index("--sarif") + 1] = str(sarif)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_layername", "audit", *args, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    walk = data["walk"]
    assert walk["packages"] == ["pytest_layername"] and walk["failed"] == []
    assert {"pytest_layername.testing.broken", "pytest_layername.suite", "pytest_layername.checks.audit"} <= set(
        walk["imported"]
    )
    assert {"pytest_layername.__main__", "pytest_layername.suite.test_ops"} <= set(walk["skipped"])
    assert [n["namespace"] for n in data["namespaces"]] == [broken.NAMESPACE]  # not torch's lazily loaded ones
    source = Path(broken.__file__).resolve()
    line = next(i for i, t in enumerate(source.read_text().splitlines(), 1) if t.startswith("def _scale_by_layer("))
    (finding,) = data["namespaces"][0]["findings"]
    assert (finding["rule"], finding["op"], finding["argument"], finding["type"]) == (
        STR_RULE,
        broken.OP_NAME,
        "layer_name",
        "str",
    )
    assert finding["site"] == {
        "path": str(source),
        "line": line,
        "module": "pytest_layername.testing.broken",
        "kind": "function",
    }
    log = json.loads(sarif.read_text(encoding="utf-8"))
    assert list(_sarif_validator().iter_errors(log)) == []
    (result,) = log["runs"][0]["results"]
    location = result["locations"][0]["physicalLocation"]
    assert (location["artifactLocation"]["uri"], location["region"]["startLine"]) == (
        display_path(str(source), REPO),
        line,
    )


@requires_hoisting
def test_walk_given_empty_namespace_names_the_import_failures(engine, capsys):
    """A namespace left empty because its module failed to import is bad input that says why."""
    e = engine
    assert main(["audit", "--walk", e.name, "--namespace", f"{e.name}_gpu"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the banner the package prints on import
    assert err.startswith(f"layername: error: namespace '{e.name}_gpu' has no registered ops"), err
    assert f"the walk failed to import 1 module(s): {e.name}.platforms.cuda: ModuleNotFoundError" in err


def test_walk_of_a_package_without_ops_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "lnwalk_noops").mkdir()
    (tmp_path / "lnwalk_noops" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["audit", "--walk", "lnwalk_noops", "--strict", "--fail-on-import-errors"]) == 0
    finally:
        del sys.modules["lnwalk_noops"]
    out = capsys.readouterr().out
    assert "no namespace to audit: the walk registered no ops (name them with --namespace NS)" in out
    assert "1 module(s) imported, 0 failed; 0 namespace(s), 0 op(s) audited; 0 finding(s)" in out
