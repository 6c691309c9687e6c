"""The pytest plugin (entry point ``pytest11``): inert until a layer-name option, fixture or marker is used.

Loading it imports only pytest, the standard library and torch-free modules, and touches no environment
variable. Torch, the implementation and the run's resolution (:mod:`.run`) load the first time a layer-name
option is given (command line, ini or ``LAYERNAME_*`` environment) or a test uses a layer-name fixture or
marker; the inductor cache is isolated by the fixtures that compile, and torch's trace records are kept out
of captured logs (:mod:`.captured_logs`). Per-test results travel as ``user_properties`` (:mod:`.properties`);
the JSON report (:mod:`.reporting`) is written by the controller only; ``--layername-trace`` writes a torch
trace per test (:mod:`.trace`).

Imports :mod:`.options` (the options, their ini keys and environment variables) and :mod:`.properties` at
load; everything else in the package lazily.
PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .._exports import lazy_exports
from . import options
from .properties import KNOWN_BUG, MODE, STATS, fusion_properties, read_properties, stats_properties

if TYPE_CHECKING:
    from ..core.implementation import Implementation
    from .counters import CompileCache, CompileCounter, FusionMatches
    from .run import LayerNameRun

#: the types a test annotates its fixtures with; the rest of the module is pytest's (hooks, fixtures)
__all__, __getattr__ = lazy_exports(
    __name__,
    {"CompileCache": "counters", "CompileCounter": "counters", "FusionMatches": "counters", "LayerNameRun": "run"},
)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
#: marker name -> help; every marker is prefixed: a generic name (``slow``, ``requires_cuda``) belongs to its project
MARKERS = {
    "layername": "layername(modes=[...]): run this test only in the listed modes ('opaque', 'string')",
    "layername_requires_opaque": "skip unless this torch supports hoisted LayerName inputs (fails if the "
    "implementation's LayerName is not hoisted on such a torch)",
    "layername_requires_cuda": "skip unless the run's device is cuda",
}
#: the layer-name markers whose use turns the plugin on
MARKER_NAMES = frozenset(MARKERS)
#: the suite's long-running tests; only registered (its use does not turn the plugin on)
SLOW_MARKER = "layername_slow: long-running tests (many layers, inductor at scale); deselect: -m 'not layername_slow'"
#: fixtures whose use turns the plugin on (each needs the run)
FIXTURES = frozenset(
    {
        "layername_mode",
        "layername_impl",
        "layername_device",
        "compile_counter",
        "compile_cache",
        "fusion_matches",
        "layername_roundtrip",
    }
)
RUN_KEY = pytest.StashKey["LayerNameRun"]()
HEADER_SHOWN_KEY = pytest.StashKey[bool]()
KNOWN_BUG_KEY = pytest.StashKey[Any]()  # a release.known_bugs.KnownBug


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("layername", "hoisted LayerName compile testing")
    for option in options.OPTIONS:
        group.addoption(option.flag, **option.addoption_kwargs())
        if option.ini:
            parser.addini(option.ini, option.help, default="")


def _asked_for(config: pytest.Config) -> bool:
    """Whether any layer-name option was given: command line, ini or environment."""
    return (
        any(config.getoption(option.dest) for option in options.OPTIONS)
        or any(config.getini(option.ini) for option in options.OPTIONS if option.ini)
        or any(os.environ.get(option.env) for option in options.OPTIONS if option.env)
    )


def layername_run(config: pytest.Config) -> LayerNameRun:
    """This process's run, resolved (torch and the implementation imported) on first use."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        from .captured_logs import TraceRecordsOutOfCapture
        from .run import start_run

        run = config.stash[RUN_KEY] = start_run(config)
        config.pluginmanager.register(TraceRecordsOutOfCapture(), "layername-captured-logs")
    return run


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", help_text if help_text.startswith(name) else f"{name}: {help_text}")
    config.addinivalue_line("markers", SLOW_MARKER)
    if not _asked_for(config):
        return
    report_path = config.getoption("layername_report")
    if not report_path and (config.getoption("layername_cell") or config.getoption("layername_cell_digest")):
        raise pytest.UsageError("layername: --layername-cell and --layername-cell-digest need --layername-report")
    run = layername_run(config)  # options given: usage errors surface now, not mid-collection
    from .trace import TestTraces, trace_directory

    if directory := trace_directory(config):
        config.pluginmanager.register(TestTraces(directory), "layername-trace")
    if report_path:  # the controller writes the report; xdist workers send it their collection counts
        from .reporting import register

        register(config, report_path, run_info=run.run_info())


def _header_once(config: pytest.Config) -> list[str] | None:
    """The run's header lines, the first time they are asked for once a run exists."""
    if RUN_KEY not in config.stash or config.stash.get(HEADER_SHOWN_KEY, False):
        return None
    config.stash[HEADER_SHOWN_KEY] = True
    return config.stash[RUN_KEY].header()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    return _header_once(config)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str] | None:
    """The header of a run that started during collection (no option given, a fixture or marker used)."""
    return _header_once(config)


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
    if "layername_mode" in metafunc.fixturenames:
        params = layername_run(metafunc.config).mode_params(_marker_modes(metafunc))
        metafunc.parametrize("layername_mode", params, indirect=True)


def _uses_layername(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return bool(FIXTURES.intersection(fixtures)) or any(m.name in MARKER_NAMES for m in item.iter_markers())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record each layer-name test's mode and tie it to a known torch bug that covers it on this torch."""
    if RUN_KEY not in config.stash and not any(_uses_layername(item) for item in items):
        return  # inert: no option given, no layer-name test collected
    bugs = layername_run(config).known_bugs
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "layername_mode" in callspec.params:
            item.user_properties.append((MODE, callspec.params["layername_mode"]))
        if bug := next((b for b in bugs if b.covers(item.nodeid)), None):
            item.stash[KNOWN_BUG_KEY] = bug
            item.user_properties.append((KNOWN_BUG, bug.id))


def pytest_runtest_setup(item: pytest.Item) -> None:
    run = item.config.stash.get(RUN_KEY, None)
    if run is None:  # no layer-name test was collected in this process
        return
    callspec = getattr(item, "callspec", None)
    opaque_case = callspec is not None and callspec.params.get("layername_mode") == "opaque"
    deselected_mode = item.get_closest_marker("skip") is not None  # e.g. a string-only test's opaque case
    requires_opaque = item.get_closest_marker("layername_requires_opaque") is not None
    needs_opaque = (opaque_case and not deselected_mode) or requires_opaque
    run.check_item(
        item, needs_opaque=needs_opaque, needs_cuda=item.get_closest_marker("layername_requires_cuda") is not None
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    bug = item.stash.get(KNOWN_BUG_KEY, None)
    if bug is not None and report.when == "call":
        from .run import apply_known_bug

        apply_known_bug(bug, report, call.excinfo)
    return report


@pytest.fixture(scope="session")
def layername_inductor_cache() -> Iterator[str]:
    """The run's own inductor/AOT cache dir (``TORCHINDUCTOR_CACHE_DIR``), unless the user chose one.

    Tests then neither read artifacts that earlier runs left in the machine-wide cache (built with other
    inductor settings) nor leave their own there. ``compile_counter`` isolates each test further.
    """
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        yield chosen
        return
    cache_dir = tempfile.mkdtemp(prefix="layername-inductor-")
    os.environ[CACHE_ENV] = cache_dir
    try:
        yield cache_dir
    finally:
        os.environ.pop(CACHE_ENV, None)
        shutil.rmtree(cache_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def layername_device(pytestconfig: pytest.Config) -> str:
    """``"cpu"`` or ``"cuda"``: where suite models, ops and fusion tests run (``--layername-device``)."""
    return layername_run(pytestconfig).device


@pytest.fixture(scope="session")
def layername_impl(pytestconfig: pytest.Config, layername_inductor_cache: str) -> Implementation:
    """The layer-name implementation under test (``--layername-impl``, default the bundled reference)."""
    return layername_run(pytestconfig).impl


@pytest.fixture
def layername_mode(request: pytest.FixtureRequest, layername_impl: Implementation) -> Iterator[str]:
    """``"opaque"`` or ``"string"``: the mode of this test case; the implementation's encoder is switched to it."""
    mode = request.param
    with layername_impl.use_mode(mode):
        yield mode


def _mode_of(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("layername_mode") if callspec is not None else None


@pytest.fixture
def compile_counter(request: pytest.FixtureRequest, layername_inductor_cache: str) -> Iterator[CompileCounter]:
    """Compile statistics of what the test compiles, with fresh Dynamo state and an isolated inductor cache.

    Works with or without ``layername_mode``; the test's mode, if it has one, is recorded with the counts.
    """
    from ..compile.session import compile_session
    from ..compile.stats import CompileStats
    from .counters import CompileCounter
    from .trace import trace_footer

    with compile_session() as session:
        try:
            yield CompileCounter(session, _mode_of(request), footer=trace_footer(request.node))
        finally:
            request.node.user_properties.extend(stats_properties(session.stats.as_dict(), CompileStats.COUNT_FIELDS))


@pytest.fixture
def compile_cache(
    request: pytest.FixtureRequest, tmp_path: Path, layername_impl: Implementation, layername_device: str
) -> Iterator[CompileCache]:
    """The test's own compile cache directory, and start-ups in fresh processes on it: a second start on
    the same directory is a warm start. The last start's statistics, with every start's counts
    (``process_starts``), are the test's statistics in the report.
    """
    from ..compile.stats import CompileStats
    from .counters import CompileCache

    cache = CompileCache(tmp_path / "compile-cache", _mode_of(request), layername_impl.module_name, layername_device)
    try:
        yield cache
    finally:
        recorded = cache.report()
        if recorded is not None:
            request.node.user_properties.extend(stats_properties(recorded, CompileStats.COUNT_FIELDS))


@pytest.fixture
def fusion_matches(request: pytest.FixtureRequest, layername_inductor_cache: str) -> Iterator[FusionMatches]:
    """Records pattern registrations and matches of the fusion passes run during the test."""
    from ..fusion.log import fusion_log
    from .counters import FusionMatches

    with fusion_log() as log:
        try:
            yield FusionMatches(log)
        finally:
            request.node.user_properties.extend(fusion_properties(log.as_dict()))


@pytest.fixture
def layername_roundtrip(
    layername_impl: Implementation, layername_mode: str, layername_device: str
) -> Callable[[Iterable[str]], None]:
    """``layername_roundtrip(names)`` asserts encode/resolve round-trips (pickle, deepcopy, fx repr, compiled)."""
    from ..checks.roundtrip import assert_roundtrip

    def check(names: Iterable[str]) -> None:
        __tracebackhide__ = True
        assert_roundtrip(layername_impl, layername_mode, list(names), device=layername_device)

    return check


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            found = read_properties(report) if hasattr(report, "user_properties") else {}
            if STATS in found:
                rows[report.nodeid] = (found.get(MODE), found[STATS])
    if not rows:
        return
    terminalreporter.section("layername compile stats")
    terminalreporter.write_line(
        f"{'mode':8} {'pieces':>6} {'unique':>6} {'fx-miss':>7} {'fx-hit':>6} {'disagree':>8} {'seconds':>8}  test"
    )
    for nodeid, (mode, stats) in rows.items():
        terminalreporter.write_line(
            f"{mode or '-':8} {stats['pieces']:6} {stats['unique_pieces']:6} {stats['fx_graph_cache_misses']:7} "
            f"{stats['fx_graph_cache_hits']:6} {stats['hash_disagreements']:8} {stats['compile_seconds']:8.2f}  "
            f"{nodeid}"
        )
