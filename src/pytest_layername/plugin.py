"""The pytest face of pytest-layername: options, mode parametrization, fixtures, markers, reports.

A thin layer over the library: modes come from :mod:`.modes`, implementations from :mod:`.impl`,
counts from :mod:`.stats`, fusion counts from :mod:`.fusion_log`, the report from :mod:`.reporting`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from .compat import opaque_support
from .environment import DEVICES, DeviceError, environment_facts, resolve_device
from .expectations import expect_counts
from .fusion_log import FusionLog, fusion_log
from .impl import REFERENCE_IMPL, Implementation, ImplementationError, load_implementation
from .known_bugs import KnownBug, active_bugs
from .modes import REQUESTABLE, Mode, ModeError, auto_mode, resolve_modes
from .reporting import ReportCollector, register_xdist_hooks
from .stats import CompileSession, CompileStats, compile_session

ENV_MODE = "LAYERNAME_MODE"
ENV_DEVICE = "LAYERNAME_DEVICE"
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MARKERS = (
    "layername(modes=[...]): run this test only in the listed layer-name modes ('opaque', 'string')",
    "requires_opaque: skip unless this torch supports hoisted LayerName inputs (fails if the implementation's "
    "LayerName is not hoisted on such a torch)",
    "requires_cuda: skip unless a CUDA device is available",
    "slow: long-running cells (many layers, inductor at scale); deselect with -m 'not slow'",
)


@dataclass(frozen=True)
class LayernameConfig:
    """What this run resolved from options, ini and environment."""

    requested_mode: str
    modes: tuple[Mode, ...]  # the modes tests are parametrized over
    impl: Implementation
    native_mode: Mode  # what the implementation's own encoder produces by default
    not_exercised: dict[str, str]  # mode -> why the implementation cannot be switched to it
    device: str  # "cpu" or "cuda": where every suite model, op and fusion test runs
    environment: dict[str, Any]  # environment_facts(device), read once (it may run nvidia-smi)
    known_bugs: tuple[KnownBug, ...]  # the registered torch bugs this torch and device have
    allow_unhoisted: bool = False

    def opaque_problem(self) -> tuple[str, bool] | None:
        """(reason, fail) when opaque-mode tests cannot run: fail for an unhoisted LayerName unless allowed."""
        problem = self.impl.mode_problem("opaque")
        if problem is None:
            return None
        return problem.reason, problem.kind == "not_hoisted" and not self.allow_unhoisted

    def header(self) -> str:
        support = opaque_support()
        opaque = "supported" if support.supported else f"unsupported ({support.reason})"
        switch = self.impl.switch or "none"
        facts = self.environment
        cuda = f", CUDA {facts['cuda_version']}, driver {facts['driver_version']}" if self.device == "cuda" else ""
        lines = [
            f"layername: torch {torch.__version__}, opaque {opaque}, mode {self.requested_mode} -> "
            f"{','.join(self.modes)}, impl {self.impl.module_name} (native {self.native_mode}, switch {switch}), "
            f"device {self.device} ({facts['device_name']}{cuda})"
        ]
        lines += [f"layername: known torch bug {bug.id} expected ({bug.url})" for bug in self.known_bugs]
        lines += [f"layername: {mode} mode NOT EXERCISED: {why}" for mode, why in self.not_exercised.items()]
        if (problem := self.opaque_problem()) and "opaque" in self.modes:
            verdict = "opaque-mode tests FAIL" if problem[1] else "opaque-mode tests skip"
            lines.append(f"layername: {verdict}: {problem[0]}")
        return "\n".join(lines)


CONFIG_KEY = pytest.StashKey[LayernameConfig]()
STATS_KEY = pytest.StashKey[CompileStats]()
FUSION_KEY = pytest.StashKey[FusionLog]()
KNOWN_BUG_KEY = pytest.StashKey[KnownBug]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("layername", "hoisted LayerName compile testing")
    group.addoption(
        "--layername-mode",
        choices=REQUESTABLE,
        default=None,
        help=f"layer-name mode: {'|'.join(REQUESTABLE)} (default: ini layername_mode, env {ENV_MODE}, else auto)",
    )
    group.addoption(
        "--layername-impl",
        default=None,
        help=f"dotted module providing LayerName, _encode_layer_name, _resolve_layer_name (default {REFERENCE_IMPL})",
    )
    group.addoption("--layername-report", default=None, metavar="PATH", help="write a JSON report to PATH")
    group.addoption(
        "--layername-device",
        choices=DEVICES,
        default=None,
        help=f"where suite models, ops and fusion tests run: {'|'.join(DEVICES)} (default: ini layername_device, "
        f"env {ENV_DEVICE}, else auto = cuda when available)",
    )
    group.addoption(
        "--layername-allow-unhoisted",
        action="store_true",
        default=False,
        help="skip (instead of fail) opaque-mode tests when the implementation's LayerName is not registered "
        "hoisted on a torch that supports hoisting",
    )
    parser.addini("layername_mode", f"layer-name mode ({'|'.join(REQUESTABLE)})", default="")
    parser.addini("layername_impl", "dotted module of the layer-name implementation", default="")
    parser.addini("layername_device", f"device of the suite ({'|'.join(DEVICES)})", default="")


def _requested_mode(config: pytest.Config) -> str:
    return config.getoption("layername_mode") or config.getini("layername_mode") or os.environ.get(ENV_MODE) or "auto"


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    requested = _requested_mode(config)
    impl_name = config.getoption("layername_impl") or config.getini("layername_impl") or REFERENCE_IMPL
    device_option = config.getoption("layername_device") or config.getini("layername_device")
    try:
        requested_modes = resolve_modes(requested)
        impl = load_implementation(impl_name)
        device = resolve_device(device_option or os.environ.get(ENV_DEVICE) or "auto")
    except (ModeError, ImplementationError, DeviceError) as error:
        raise pytest.UsageError(f"layername: {error}") from error
    if requested == "opaque" and (reason := impl.opaque_unavailable_reason()):
        raise pytest.UsageError(f"layername: mode 'opaque' is unavailable with {impl.module_name}: {reason}")
    problems = {mode: impl.mode_problem(mode) for mode in requested_modes}
    not_exercised = {m: p.reason for m, p in problems.items() if p is not None and p.kind == "not_exercised"}
    modes = tuple(m for m in requested_modes if m not in not_exercised)
    if not modes:
        raise pytest.UsageError(f"layername: no requested mode can run: {'; '.join(not_exercised.values())}")
    config.stash[CONFIG_KEY] = LayernameConfig(
        requested,
        modes,
        impl,
        impl.native_mode(),
        not_exercised,
        device,
        environment_facts(device),
        tuple(active_bugs(torch.__version__, device)),
        config.getoption("layername_allow_unhoisted"),
    )
    _isolate_inductor_cache(config)
    report_path = config.getoption("layername_report")
    if report_path and not hasattr(config, "workerinput"):  # the controller writes; xdist workers send reports
        collector = ReportCollector(config, report_path, run_info=_run_info(config.stash[CONFIG_KEY]))
        config.pluginmanager.register(collector, "layername-report")
        register_xdist_hooks(config, collector)


def _isolate_inductor_cache(config: pytest.Config) -> None:
    """Give the run its own inductor/AOT cache dir (xdist workers inherit it) unless the user chose one.

    Tests then neither read artifacts that earlier runs left in the machine-wide cache (built with other
    inductor settings) nor leave their own there. ``compile_counter`` isolates each test further.
    """
    if os.environ.get(CACHE_ENV):
        return
    cache_dir = tempfile.mkdtemp(prefix="layername-inductor-")
    os.environ[CACHE_ENV] = cache_dir

    def cleanup() -> None:
        os.environ.pop(CACHE_ENV, None)
        shutil.rmtree(cache_dir, ignore_errors=True)

    config.add_cleanup(cleanup)


def _run_info(cfg: LayernameConfig) -> dict[str, Any]:
    return {
        **cfg.environment,
        "known_bugs": [bug.as_dict() for bug in cfg.known_bugs],
        "impl": cfg.impl.module_name,
        "impl_native_mode": cfg.native_mode,
        "impl_switch": cfg.impl.switch,
        "requested_mode": cfg.requested_mode,
        "modes": list(cfg.modes),
        "not_exercised": dict(cfg.not_exercised),
        "allow_unhoisted": cfg.allow_unhoisted,
        "detected_mode": auto_mode(),
    }


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[CONFIG_KEY].header()


def _marker_modes(metafunc: pytest.Metafunc) -> set[str] | None:
    marker = metafunc.definition.get_closest_marker("layername")
    if marker is None:
        return None
    modes = marker.kwargs.get("modes", marker.args[0] if marker.args else None)
    unknown = set(modes or ()) - {"opaque", "string"}
    if not modes or unknown:
        pytest.fail(
            f"{metafunc.definition.nodeid}: @pytest.mark.layername(modes=[...]) takes 'opaque' and/or 'string', "
            f"got {modes!r}",
            pytrace=False,
        )
    return set(modes)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "layername_mode" not in metafunc.fixturenames:
        return
    cfg = metafunc.config.stash[CONFIG_KEY]
    allowed = _marker_modes(metafunc)
    params = []
    for mode in cfg.modes:
        marks: list[pytest.MarkDecorator] = []
        if allowed is not None and mode not in allowed:
            marks.append(pytest.mark.skip(reason=f"layername: test runs only in mode(s) {sorted(allowed)}"))
        elif mode == "opaque" and (problem := cfg.opaque_problem()) and not problem[1]:
            marks.append(pytest.mark.skip(reason=f"layername: opaque mode unavailable: {problem[0]}"))
        params.append(pytest.param(mode, id=mode, marks=marks))
    metafunc.parametrize("layername_mode", params, indirect=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    cfg = item.config.stash[CONFIG_KEY]
    callspec = getattr(item, "callspec", None)
    opaque_case = callspec is not None and callspec.params.get("layername_mode") == "opaque"
    deselected_mode = item.get_closest_marker("skip") is not None  # e.g. a string-only test's opaque case
    needs_opaque = (opaque_case and not deselected_mode) or item.get_closest_marker("requires_opaque")
    if needs_opaque and (problem := cfg.opaque_problem()):
        reason, fail = problem
        if fail:  # a broken implementation is a failure, never a skip
            pytest.fail(f"layername: {reason} (--layername-allow-unhoisted skips instead)", pytrace=False)
        pytest.skip(f"requires_opaque: {reason}")
    if item.get_closest_marker("requires_cuda") and cfg.device != "cuda":
        why = "the run's device is cpu (--layername-device)"
        if not torch.cuda.is_available():
            why = "no CUDA device: torch.cuda.is_available() is False"
        pytest.skip(f"requires_cuda: {why}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tie each test a known torch bug covers (on this torch and device) to that bug."""
    bugs = config.stash[CONFIG_KEY].known_bugs
    for item in items:
        if bug := next((b for b in bugs if b.covers(item.nodeid)), None):
            item.stash[KNOWN_BUG_KEY] = bug


@pytest.fixture(scope="session")
def layername_device(pytestconfig: pytest.Config) -> str:
    """``"cpu"`` or ``"cuda"``: where suite models, ops and fusion tests run (``--layername-device``)."""
    return pytestconfig.stash[CONFIG_KEY].device


@pytest.fixture(scope="session")
def layername_impl(pytestconfig: pytest.Config) -> Implementation:
    """The layer-name implementation under test (``--layername-impl``, default the bundled reference)."""
    return pytestconfig.stash[CONFIG_KEY].impl


@pytest.fixture
def layername_mode(request: pytest.FixtureRequest) -> Iterator[Mode]:
    """``"opaque"`` or ``"string"``: the mode of this test case; the implementation's encoder is switched to it."""
    mode: Mode = request.param
    with request.config.stash[CONFIG_KEY].impl.use_mode(mode):
        yield mode


class CompileCounter:
    """A :class:`~.stats.CompileSession` for one test, with ``expect`` and a ``compile`` shortcut."""

    def __init__(self, session: CompileSession, mode: Mode) -> None:
        self.session = session
        self.mode = mode

    def backend(self, compiler: str = "inductor", splitting_ops: Iterable[str] | None = None) -> Callable[..., Any]:
        return self.session.backend(compiler, tuple(splitting_ops) if splitting_ops is not None else None)

    def compile(self, fn: Callable[..., Any], compiler: str = "inductor", **kwargs: Any) -> Callable[..., Any]:
        """``torch.compile(fn)`` with the piecewise backend reporting into this counter."""
        return torch.compile(fn, backend=self.backend(compiler, kwargs.pop("splitting_ops", None)), **kwargs)

    @property
    def stats(self) -> CompileStats:
        return self.session.stats

    def expect(self, *, allow_hash_disagreements: bool = False, **counts: int) -> None:
        """Assert the named counts (``unique_pieces=3, inductor_compiles=3, recompiles=0``, ...).

        Fails too where the structural hash and torch's FX-graph cache disagreed on a piece, unless allowed.
        """
        __tracebackhide__ = True
        expect_counts(self.stats, allow_hash_disagreements=allow_hash_disagreements, **counts)


@pytest.fixture
def compile_counter(request: pytest.FixtureRequest, layername_mode: Mode) -> Iterator[CompileCounter]:
    """Compile statistics of what the test compiles, with fresh Dynamo state and an isolated inductor cache."""
    with compile_session() as session:
        counter = CompileCounter(session, layername_mode)
        try:
            yield counter
        finally:
            request.node.stash[STATS_KEY] = session.stats


class FusionMatches:
    """Pattern-matcher activity during one test, per fusion pass."""

    def __init__(self, log: FusionLog) -> None:
        self.log = log

    def expect(self, pass_name: str, *, matched: int | None = None, patterns: int | None = None) -> None:
        """Assert how many matches ``pass_name`` replaced and/or how many patterns it registered."""
        __tracebackhide__ = True
        actual = {"matched": self.log.matched(pass_name), "patterns": self.log.patterns(pass_name)}
        wanted = {k: v for k, v in {"matched": matched, "patterns": patterns}.items() if v is not None}
        wrong = {k: (v, actual[k]) for k, v in wanted.items() if actual[k] != v}
        if wrong:
            diff = ", ".join(f"{k}: expected {exp}, got {act}" for k, (exp, act) in wrong.items())
            raise AssertionError(f"fusion pass {pass_name!r}: {diff} (all passes: {self.log.as_dict()})")


@pytest.fixture
def fusion_matches(request: pytest.FixtureRequest, layername_mode: Mode) -> Iterator[FusionMatches]:
    """Records pattern registrations and matches of the fusion passes run during the test."""
    with fusion_log() as log:
        try:
            yield FusionMatches(log)
        finally:
            request.node.stash[FUSION_KEY] = log


@pytest.fixture
def layername_roundtrip(
    layername_impl: Implementation, layername_mode: Mode, layername_device: str
) -> Callable[[Iterable[str]], None]:
    """``layername_roundtrip(names)`` asserts encode/resolve round-trips (pickle, deepcopy, fx repr, compiled)."""
    from .roundtrip import assert_roundtrip

    def check(names: Iterable[str]) -> None:
        __tracebackhide__ = True
        assert_roundtrip(layername_impl, layername_mode, list(names), device=layername_device)

    return check


def _apply_known_bug(
    bug: KnownBug, report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None
) -> None:
    """A strict expected failure: failing for the bug's reason is expected; passing or another failure fails.

    The reason is read from the exception alone (type and message), never from the traceback's source lines.
    """
    failure = f"{excinfo.typename}: {excinfo.value}" if excinfo is not None else ""
    if report.failed and bug.explains(failure):
        report.outcome = "skipped"
        report.wasxfail = f"known torch bug {bug.id}: {bug.summary} ({bug.url})"
    elif report.failed:
        report.sections.append(
            ("layername known bug", f"expected {bug.id} (failure matching {bug.match!r}) but it failed otherwise")
        )
    elif report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"[XPASS(strict)] known torch bug {bug.id} ({bug.url}) no longer fails on torch {torch.__version__}: "
            f"narrow its torch range ({bug.torch}) in known_bugs.toml and the cells' known_bugs"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    bug = item.stash.get(KNOWN_BUG_KEY, None)
    if bug is not None and report.when == "call":
        _apply_known_bug(bug, report, call.excinfo)
    report.layername_known_bug = bug.id if bug is not None else None
    callspec = getattr(item, "callspec", None)
    report.layername_mode = callspec.params.get("layername_mode") if callspec else None
    stats = item.stash.get(STATS_KEY, None)
    log = item.stash.get(FUSION_KEY, None)
    report.layername_stats = stats.as_dict() if stats is not None else None
    report.layername_fusion = log.as_dict() if log is not None else None
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = _rows_from_reports(terminalreporter)
    if not rows:
        return
    terminalreporter.section("layername compile stats")
    terminalreporter.write_line(
        f"{'mode':8} {'pieces':>6} {'unique':>6} {'fx-miss':>7} {'fx-hit':>6} {'disagree':>8} {'seconds':>8}  test"
    )
    for nodeid, mode, stats in rows:
        terminalreporter.write_line(
            f"{mode or '-':8} {stats['pieces']:6} {stats['unique_pieces']:6} {stats['fx_graph_cache_misses']:7} "
            f"{stats['fx_graph_cache_hits']:6} {stats['hash_disagreements']:8} {stats['compile_seconds']:8.2f}  "
            f"{nodeid}"
        )


def _rows_from_reports(terminalreporter: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    rows: dict[str, tuple[str, str | None, dict[str, Any]]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            stats = getattr(report, "layername_stats", None)
            if stats is not None:
                rows[report.nodeid] = (report.nodeid, getattr(report, "layername_mode", None), stats)
    return list(rows.values())
