"""Counting a compile the harness does not drive: ``observe_compile`` and ``compile_counter`` around a plain
``torch.compile`` and around a toy engine with counters of its own (read through an engine adapter).

Expected values come from what each test compiles (one function, one graph, a known recompile) and from
torch's own ``CompileCounterWithBackend``, never from the observer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from pytest_layername.compile.engines import AttributeCounters, EngineCountersError, engine_counters
from pytest_layername.compile.expectations import CountMismatch, expect_counts
from pytest_layername.compile.session import compile_session, observe_compile


def fn(x: torch.Tensor) -> torch.Tensor:
    return (x.sin() @ x.T).relu() + x.cos()


@pytest.fixture
def fresh_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty inductor cache directory and fresh Dynamo state for the test."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield tmp_path / "inductor"
    torch._dynamo.reset()


def test_a_plain_inductor_compile_is_counted(fresh_cache: Any) -> None:
    """torch.compile's own inductor backend, two shapes (one recompile): frames, graphs, cache counts."""
    counter = CompileCounterWithBackend("inductor")
    with observe_compile() as seen:
        compiled = torch.compile(fn, backend=counter, dynamic=False)
        compiled(torch.randn(8, 8))
        compiled(torch.randn(8, 8))  # guards hold: no new frame
        compiled(torch.randn(6, 6))  # new shape: a recompile
    stats = seen.stats
    assert counter.frame_count == 2
    expect_counts(
        stats, dynamo_frames=counter.frame_count, graphs=2, recompiles=1, pieces=0, fx_graph_cache_misses=2,
        fx_graph_cache_hits=0, fx_graph_cache_saved=2, aot_autograd_cache_misses=2, aot_autograd_cache_saved=2,
        inductor_compiles=2, artifacts_saved=2, artifacts_loaded=0,
    )  # fmt: skip
    assert stats.artifacts_source == "torch"
    assert len(stats.recompile_reasons) == 1 and "size mismatch" in stats.recompile_reasons[0]


def test_a_second_compile_of_the_same_graph_loads_from_the_cache(fresh_cache: Any) -> None:
    with observe_compile():
        torch.compile(fn)(torch.randn(8, 8))
    torch._dynamo.reset()  # Dynamo forgets the frame; inductor's cache on disk keeps the artifact
    with observe_compile() as seen:
        torch.compile(fn)(torch.randn(8, 8))
    expect_counts(
        seen.stats, dynamo_frames=1, fx_graph_cache_hits=1, fx_graph_cache_misses=0, fx_graph_cache_saved=0,
        aot_autograd_cache_hits=1, artifacts_loaded=1, artifacts_saved=0, inductor_compiles=0,
    )  # fmt: skip


def test_what_was_compiled_before_the_block_does_not_count_and_stays_compiled(fresh_cache: Any) -> None:
    """Negative control for the deltas, and proof that observing resets nothing (compile_session does)."""
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(fn, backend=counter)
    compiled(torch.randn(8, 8))
    with observe_compile() as seen:
        compiled(torch.randn(8, 8))
    assert counter.frame_count == 1  # not recompiled: Dynamo was not reset
    expect_counts(seen.stats, dynamo_frames=0, graphs=0, fx_graph_cache_misses=0, fx_graph_cache_hits=0)
    with compile_session():  # resets Dynamo: the same call compiles again
        compiled(torch.randn(8, 8))
    assert counter.frame_count == 2


def test_a_wrong_expectation_fails_naming_the_count(fresh_cache: Any) -> None:
    with observe_compile() as seen:
        torch.compile(fn)(torch.randn(8, 8))
    with pytest.raises(CountMismatch, match=r"fx_graph_cache_misses expected 0, got 1"):
        expect_counts(seen.stats, fx_graph_cache_misses=0)


# -- an engine with counters of its own ------------------------------------------------------------------


@dataclass
class ToyCounters:
    """What a toy engine counts about itself (as vLLM's ``compilation_counter`` does)."""

    backend_calls: int = 0
    artifacts_written: int = 0
    artifacts_read: int = 0
    label: str = "not a counter"


class ToyEngine:
    """Compiles through its own backend, which counts its calls, then hands the graph to inductor."""

    def __init__(self, counters: ToyCounters) -> None:
        self.counters = counters

    def backend(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        from torch._inductor.compile_fx import compile_fx

        self.counters.backend_calls += 1
        self.counters.artifacts_written += 1
        return compile_fx(gm, example_inputs)

    def start(self) -> None:
        compiled = torch.compile(fn, backend=self.backend, dynamic=False)
        compiled(torch.randn(8, 8))
        compiled(torch.randn(5, 5))


def toy_adapter(counters: ToyCounters) -> AttributeCounters:
    return AttributeCounters("toy", counters, saved="artifacts_written", loaded="artifacts_read")


def test_engine_counters_are_read_as_deltas_beside_torchs(fresh_cache: Any) -> None:
    counters = ToyCounters(backend_calls=7)  # counts from before the block must not show
    with observe_compile([toy_adapter(counters)]) as seen:
        ToyEngine(counters).start()
    stats = seen.stats
    assert stats.engine_counts == {"toy.backend_calls": 2, "toy.artifacts_written": 2, "toy.artifacts_read": 0}
    assert stats.engine_counts["toy.backend_calls"] == stats.graphs == 2  # the engine agrees with Dynamo
    assert (stats.artifacts_saved, stats.artifacts_loaded, stats.artifacts_source) == (2, 0, "toy")
    expect_counts(stats, **{"toy.backend_calls": 2}, recompiles=1)
    with pytest.raises(CountMismatch, match=r"toy\.backend_calls expected 1, got 2"):
        expect_counts(stats, **{"toy.backend_calls": 1})


def test_engine_adapter_errors_name_the_problem() -> None:
    with pytest.raises(EngineCountersError, match=r"no counter.*missing"):
        AttributeCounters("toy", ToyCounters(), saved="missing")
    with pytest.raises(EngineCountersError, match="not a dataclass; name its fields"):
        AttributeCounters("toy", object()).read()
    with pytest.raises(EngineCountersError, match="give one of vllm or module:factory"):
        engine_counters("nosuch")
    with pytest.raises(EngineCountersError, match="nosuch_module"):
        engine_counters("nosuch_module:factory")
    with pytest.raises(EngineCountersError, match="returned int"):
        engine_counters("os:getpid")
    assert AttributeCounters("toy", ToyCounters(backend_calls=3)).read()["backend_calls"] == 3
    assert "label" not in AttributeCounters("toy", ToyCounters()).names()  # only int fields are counters


COUNTER_OBSERVES = """
import torch
from dataclasses import dataclass
from pytest_layername.compile.engines import AttributeCounters

@dataclass
class Engine:
    compiles: int = 0

ENGINE = Engine()

def backend(gm, example_inputs):
    ENGINE.compiles += 1
    return gm.forward

def start_engine():
    torch.compile(lambda x: x.sin() + 1, backend=backend)(torch.randn(4))

def test_engine_start(compile_counter):
    compile_counter.watch(AttributeCounters("engine", ENGINE))
    start_engine()
    compile_counter.expect(dynamo_frames=1, graphs=1, pieces=0, engine={"engine.compiles": EXPECTED})
"""


@pytest.mark.parametrize("expected, outcome", [(1, "passed"), (2, "failed")])
def test_compile_counter_observes_an_engine_it_does_not_drive(pytester: pytest.Pytester, expected: int, outcome: str):
    pytester.makepyfile(COUNTER_OBSERVES.replace("EXPECTED", str(expected)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*engine.compiles*2*1*"])
