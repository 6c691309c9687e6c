"""Tests do not leak compile state into each other: the same counts in any order, and each session starts cold."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_layername.compile.session import compile_session
from pytest_layername.core.implementation import load_implementation
from pytest_layername.harness.models import build_model, run

SHUFFLE_CONFTEST = """
import os, random

def pytest_collection_modifyitems(session, config, items):
    seed = os.environ.get("ORDER_SEED")
    if seed:
        random.Random(int(seed)).shuffle(items)
    with open(os.environ["ORDER_LOG"], "w") as handle:
        handle.write("\\n".join(item.nodeid for item in items))
"""

COUNT_TESTS = """
import pytest, torch
from pytest_layername.harness.models import build_model, run

def _compile(kind, layers, compiler, impl, mode, counter):
    model = build_model(kind, layers, impl, mode)
    x = model.example_input()
    torch.testing.assert_close(run(model, counter.compile(model, compiler=compiler), x), run(model, model, x))

@pytest.mark.parametrize("kind", ["decoder", "hybrid"])
def test_eager(kind, layername_mode, layername_impl, compile_counter):
    _compile(kind, 4, "eager", layername_impl, layername_mode, compile_counter)

def test_eager_same_model_again(layername_mode, layername_impl, compile_counter):
    _compile("decoder", 4, "eager", layername_impl, layername_mode, compile_counter)

def test_inductor(layername_mode, layername_impl, compile_counter):
    _compile("decoder", 1, "inductor", layername_impl, layername_mode, compile_counter)

def test_inductor_same_model_again(layername_mode, layername_impl, compile_counter):
    _compile("decoder", 1, "inductor", layername_impl, layername_mode, compile_counter)
"""


def _run_in_order(pytester: pytest.Pytester, seed: int | None) -> tuple[list[str], dict[str, dict[str, int]]]:
    order_log = pytester.path / f"order-{seed}.txt"
    report = pytester.path / f"report-{seed}.json"
    env = {"ORDER_LOG": str(order_log), **({"ORDER_SEED": str(seed)} if seed is not None else {})}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", "--layername-mode=both", f"--layername-report={report}"
        )
    assert result.ret == 0, result.stdout.str()[-3000:]
    data = json.loads(report.read_text())
    counts = {t["nodeid"]: {k: v for k, v in t["stats"].items() if isinstance(v, int)} for t in data["tests"]}
    return order_log.read_text().splitlines(), counts


@pytest.mark.layername_slow  # two pytest subprocesses with cold inductor compiles: about 2-3 minutes on 2 shared cores
def test_random_order_gives_the_same_counts(pytester):
    """Collection order and a shuffle: every test's compile counts are identical (inductor included)."""
    pytester.makeconftest(SHUFFLE_CONFTEST)
    pytester.makepyfile(test_counts=COUNT_TESTS)
    runs = [_run_in_order(pytester, seed) for seed in (None, 7)]
    orders = [order for order, _ in runs]
    assert orders[0] != orders[1], orders  # the orders really differ
    baseline = runs[0][1]
    assert len(baseline) == 10 and all(stats["dynamo_frames"] == 1 for stats in baseline.values()), baseline
    for _order, counts in runs[1:]:
        assert counts == baseline, {n: (baseline[n], counts[n]) for n in baseline if counts[n] != baseline[n]}
    for mode in ("opaque", "string"):  # the repeated inductor test starts cold: no cache hit from its twin
        first = baseline[f"test_counts.py::test_inductor[{mode}]"]
        again = baseline[f"test_counts.py::test_inductor_same_model_again[{mode}]"]
        assert first == again and again["fx_graph_cache_hits"] == 0 and again["inductor_compiles"] > 0, again


def test_without_a_fresh_session_state_leaks():
    """The control: compiling the same model twice in one Dynamo state is a cache hit; a new session is cold."""
    impl = load_implementation()
    model = build_model("decoder", 2, impl, "string")
    x = model.example_input()
    with compile_session() as session:
        compiled = torch.compile(model, backend=session.backend("inductor"))
        run(model, compiled, x)
        cold = session.stats
        torch._dynamo.reset()  # Dynamo forgets, the inductor cache dir of this session does not
        run(model, torch.compile(model, backend=session.backend("inductor")), x)
        warm = session.stats
    assert cold.fx_graph_cache_misses > 0 and cold.fx_graph_cache_hits == 0
    assert warm.fx_graph_cache_hits - cold.fx_graph_cache_hits > 0  # shared cache: the second compile hit
    with compile_session() as session:
        run(model, torch.compile(model, backend=session.backend("inductor")), x)
        fresh = session.stats
    assert fresh.fx_graph_cache_hits == 0 and fresh.fx_graph_cache_misses == cold.fx_graph_cache_misses
    assert fresh.dynamo_frames == cold.dynamo_frames == 1


def test_a_nested_fresh_session_leaves_the_outer_cache_alone():
    """A fresh session inside another starts cold and does not empty the outer session's FX-graph cache."""
    impl = load_implementation()
    model = build_model("decoder", 1, impl, "string")
    x = model.example_input()
    with compile_session() as outer:
        run(model, torch.compile(model, backend=outer.backend("inductor")), x)
        with compile_session() as inner:
            torch.compile(lambda t: t * 3, backend=inner.backend("inductor"))(x)  # another graph
            nested = inner.stats
        before = outer.stats
        torch._dynamo.reset()
        run(model, torch.compile(model, backend=outer.backend("inductor")), x)
        again = outer.stats
    assert nested.fx_graph_cache_hits == 0 and nested.fx_graph_cache_misses > 0  # cold inside
    assert again.fx_graph_cache_misses == before.fx_graph_cache_misses  # the outer entries were still there
    assert again.fx_graph_cache_hits - before.fx_graph_cache_hits == 2  # both pieces of the 1-layer decoder
