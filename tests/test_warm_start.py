"""Warm start as an assertion: fresh processes on one cache directory (``compile_cache``), torch's counts.

The expected counts come from the reference decoder's structure: N layers give N+1 pieces, of which 3 are
distinct with hoisted ``LayerName`` inputs (first, middle, last) and N+1 with strings (each piece before an
attention bakes its layer's name into the KV-cache update). A cold start compiles the distinct pieces and
writes them; a second process on the same directory loads every piece and compiles nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_layername.compile.cache_faults import clone_cache
from pytest_layername.compile.expectations import CountMismatch
from pytest_layername.compile.process_start import cache_artifacts_available
from pytest_layername.release.report import schema_problem
from shared_cold import LAYERS, decoder_cold


def distinct(mode: str, layers: int) -> int:
    return 3 if mode == "opaque" else layers + 1


def expect_cold(start, mode: str, layers: int) -> None:
    __tracebackhide__ = True
    unique, pieces = distinct(mode, layers), layers + 1
    start.expect(
        pieces=pieces, unique_pieces=unique, fx_graph_cache_misses=unique, fx_graph_cache_saved=unique,
        fx_graph_cache_hits=pieces - unique, artifacts_saved=unique, recompiles=0,
    )  # fmt: skip


def expect_warm(start, layers: int) -> None:
    """Every piece loaded from the cache (FX-graph cache hits == pieces), nothing compiled or written."""
    __tracebackhide__ = True
    pieces = layers + 1
    start.expect(
        pieces=pieces, fx_graph_cache_hits=pieces, fx_graph_cache_misses=0, fx_graph_cache_bypasses=0,
        inductor_compiles=0, fx_graph_cache_saved=0, artifacts_saved=0, artifacts_loaded=pieces,
        aot_autograd_cache_misses=0, recompiles=0,
    )  # fmt: skip


def test_a_second_process_on_the_cache_loads_every_piece(layername_mode: str, compile_cache, tmp_path_factory) -> None:
    layers = LAYERS
    cold = decoder_cold(compile_cache, layername_mode, tmp_path_factory)  # the run's cold start, shared
    expect_cold(cold, layername_mode, layers)
    with pytest.raises(CountMismatch, match=r"cold \(shared .* start .*fx_graph_cache_misses expected 0, got [1-9]"):
        expect_warm(cold, layers)  # negative control: the warm assertion fails on a start with an empty cache
    cache = clone_cache(cold.cache_dir, compile_cache.directory("cold-cache"))
    warm = compile_cache.start_reference("decoder", layers, label="warm", cache_dir=cache)
    expect_warm(warm, layers)


def test_saved_cache_artifacts_carry_a_cold_start_into_an_empty_directory(
    layername_mode: str, compile_cache, tmp_path_factory
) -> None:
    """``torch.compiler.save_cache_artifacts()`` after a cold start, ``load_cache_artifacts()`` in a fresh
    process on an empty directory: it compiles nothing."""
    available, why = cache_artifacts_available()
    if not available:
        pytest.skip(why)  # the torch of this cell has no portable cache artifacts
    layers = LAYERS
    unique = distinct(layername_mode, layers)
    cold = decoder_cold(compile_cache, layername_mode, tmp_path_factory)  # the run's cold start, shared
    assert cold.cache_artifacts["saved"]["inductor"] == unique  # torch's own list of what it recorded
    empty = compile_cache.directory("empty")
    warm = compile_cache.start_reference(
        "decoder", layers, label="warm from artifacts", cache_dir=empty, load_cache_artifacts=cold.artifacts_saved_to
    )
    assert warm.cache_artifacts["loaded"]["inductor"] == unique
    expect_warm(warm, layers)


@pytest.mark.layername_slow  # 2 fresh processes per mode with inductor at 32 and 64 layers: minutes on 2 shared cores
def test_64_layers_on_the_cache_of_32(layername_mode: str, compile_cache) -> None:
    """A 64-layer decoder started on a 32-layer decoder's cache. LayerName: its 65 pieces are the 3 distinct
    pieces the 32-layer start wrote, nothing new. Strings: pieces 0-31 bake layers 0-31's names, as the
    32-layer start's did (hits); pieces 32-63 bake the 32 new layers' names (misses); the last piece (the
    last layer after attention, the final norm) holds no layer name and matches the 32-layer one (a hit)."""
    cold = compile_cache.start_reference("decoder", 32, label="32 layers cold")
    expect_cold(cold, layername_mode, 32)
    bigger = compile_cache.start_reference("decoder", 64, label="64 layers on the 32-layer cache")
    new = 0 if layername_mode == "opaque" else 32
    bigger.expect(
        pieces=65, fx_graph_cache_misses=new, fx_graph_cache_saved=new, fx_graph_cache_hits=65 - new,
        aot_autograd_cache_misses=new, inductor_compiles=new,
    )  # fmt: skip


def test_compile_cache_records_every_start_in_the_report(pytester: pytest.Pytester) -> None:
    """The last start's statistics and every start's counts (``process_starts``) reach the JSON report."""
    pytester.makepyfile(
        """
        def test_starts(layername_mode, compile_cache):
            compile_cache.start_reference("decoder", 2, compiler="eager", label="first")
            compile_cache.start_reference("decoder", 2, compiler="eager", label="second")
            assert [s.label for s in compile_cache.starts] == ["first", "second"]
        """
    )
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("--layername-mode=opaque", f"--layername-report={report}")
    result.assert_outcomes(passed=1)
    data = json.loads(Path(report).read_text(encoding="utf-8"))
    assert schema_problem(data) is None
    stats = data["tests"][0]["stats"]
    assert [s["label"] for s in stats["process_starts"]] == ["first", "second"]
    assert stats["pieces"] == 3 and stats["process_starts"][1]["counts"]["pieces"] == 3
    assert all(s["seconds"] > 0 and s["result"]["max_abs_error"] == 0.0 for s in stats["process_starts"])


def test_a_start_asserts_engine_counters_as_compile_counter_does() -> None:
    """``ProcessStart.expect(engine={...})`` checks an engine adapter's counters (the engine stage's warm
    starts assert vLLM's compiles this way); a wrong value fails naming the counter."""
    from pytest_layername.compile.process_start import ProcessStart
    from pytest_layername.compile.stats import CompileStats

    stats = CompileStats(artifacts_loaded=3, artifacts_source="toy", engine_counts={"toy.compiles": 0})
    start = ProcessStart("warm", "toy:start", "/cache", stats, result=None, seconds=1.0, target_seconds=0.5, torch="x")
    start.expect(artifacts_loaded=3, engine={"toy.compiles": 0})
    with pytest.raises(CountMismatch, match=r"warm start on /cache: .*toy\.compiles expected 2, got 0"):
        start.expect(engine={"toy.compiles": 2})
