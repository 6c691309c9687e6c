"""Reference models: every layer finds its own state (the ground truth), and identical layers compile once.

Each model's layers hold their own state (KV cache history and scale, expert weights, SSM parameters and
state) that the ops find by name. Every run, eager or compiled, is compared with the ground truth: the
output computed from the harness's own copy of that state keyed by plain name, never through the
implementation's encoder or resolver. The 12-layer cases give names with two-digit indices.
"""

from __future__ import annotations

import pytest

from pytest_layername.fusion.testing import fast_cpu_inductor
from pytest_layername.harness.ground_truth import assert_ground_truth
from pytest_layername.harness.models import build_model, run

# Unique pieces with hoisted names: first piece, the repeated middle piece, last piece (hybrid: two middles).
OPAQUE_UNIQUE = {"decoder": 3, "moe": 3, "hybrid": 4}


def expected_unique(kind: str, layers: int, mode: str) -> int:
    if mode == "opaque":
        return min(OPAQUE_UNIQUE[kind], layers + 1)
    if kind == "hybrid":  # only pieces in front of attention layers hold a baked kv-cache name
        return (layers + 1) // 2 + 2 if layers > 2 else layers + 1
    return layers + 1


@pytest.mark.parametrize("kind", ["decoder", "moe", "hybrid"])
@pytest.mark.parametrize("layers", [4, 12])
def test_unique_pieces(kind, layers, layername_mode, layername_impl, layername_device, compile_counter):
    model = build_model(kind, layers, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    assert_ground_truth(model, run(model, model, x), x, stage="eager")
    actual = run(model, compile_counter.compile(model, compiler="eager"), x)
    assert_ground_truth(model, actual, x, stage="compiled(eager)")
    unique = expected_unique(kind, layers, layername_mode)
    compile_counter.expect(
        dynamo_frames=1, recompiles=0, graphs=1, pieces=layers + 1, unique_pieces=unique, backend_compilations=unique
    )


# Two sizes fix the growth law: hoisted names compile 3 pieces at both (constant), strings N+1 at both (4 then
# 7: one per layer plus one); 3 layers is the smallest decoder with a repeated middle piece (a cache hit in
# opaque mode). The 32-layer case, the same law at scale, is in the slow tier (run by the matrix cells).
@pytest.mark.parametrize("layers", [3, 6, pytest.param(32, marks=pytest.mark.layername_slow)])
def test_decoder_inductor(layers, layername_mode, layername_impl, layername_device, compile_counter):
    """Every piece goes to inductor; torch's FX-graph cache compiles 3 with hoisted names (N+1 with strings).

    The counts are torch's: ``inductor_compiles`` is FX-graph-cache misses, the rest are hits. ``expect``
    also fails if the structural hash disagrees with torch on any piece.
    """
    model = build_model("decoder", layers, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    actual = run(model, compile_counter.compile(model, compiler="inductor"), x)
    assert actual.device.type == layername_device
    assert_ground_truth(model, actual, x, stage="compiled(inductor)")
    unique = 3 if layername_mode == "opaque" else layers + 1
    compile_counter.expect(
        pieces=layers + 1,
        unique_pieces=unique,
        inductor_compiles=unique,
        fx_graph_cache_hits=layers + 1 - unique,
        hash_disagreements=0,
        recompiles=0,
    )
    stats = compile_counter.stats
    assert stats.aot_autograd_cache_hits + stats.aot_autograd_cache_misses == layers + 1  # each piece looked up


@pytest.mark.parametrize("kind", ["moe", "hybrid"])
def test_inductor_matches_ground_truth(kind, layername_mode, layername_impl, layername_device, compile_counter):
    """Inductor artifacts, shared by layers in opaque mode, still give every MoE and Mamba layer its own state."""
    model = build_model(kind, 4, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    with fast_cpu_inductor():
        actual = run(model, compile_counter.compile(model, compiler="inductor"), x)
    assert_ground_truth(model, actual, x, stage="compiled(inductor)")
    compile_counter.expect(pieces=5, inductor_compiles=expected_unique(kind, 4, layername_mode), recompiles=0)


def test_second_call_does_not_recompile(layername_mode, layername_impl, layername_device, compile_counter):
    model = build_model("decoder", 4, layername_impl, layername_mode, device=layername_device)
    compiled = compile_counter.compile(model, compiler="eager")
    for seed in range(3):
        x = model.example_input(seed)
        assert_ground_truth(model, run(model, compiled, x), x, stage=f"compiled(eager), call {seed + 1}")
    compile_counter.expect(dynamo_frames=1, recompiles=0, backend_compilations=compile_counter.stats.unique_pieces)
