"""Compile counts of the reference models: hoisted names compile each distinct piece once."""

from __future__ import annotations

import pytest
import torch

from pytest_layername.compile.expectations import CountMismatch
from pytest_layername.harness.models import build_model, run
from pytest_layername.testing.broken import OP_NAME, break_model

# Unique pieces with hoisted names: first piece, the repeated middle piece, last piece (hybrid: two middles).
OPAQUE_UNIQUE = {"decoder": 3, "moe": 3, "hybrid": 4}


def expected_unique(kind: str, layers: int, mode: str) -> int:
    if mode == "opaque":
        return min(OPAQUE_UNIQUE[kind], layers + 1)
    if kind == "hybrid":  # only pieces in front of attention layers hold a baked kv-cache name
        return (layers + 1) // 2 + 2 if layers > 2 else layers + 1
    return layers + 1


@pytest.mark.parametrize("kind", ["decoder", "moe", "hybrid"])
@pytest.mark.parametrize("layers", [4, 8])
def test_unique_pieces(kind, layers, layername_mode, layername_impl, layername_device, compile_counter):
    model = build_model(kind, layers, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    expected = run(model, model, x)
    actual = run(model, compile_counter.compile(model, compiler="eager"), x)
    torch.testing.assert_close(actual, expected)
    unique = expected_unique(kind, layers, layername_mode)
    compile_counter.expect(
        dynamo_frames=1, recompiles=0, graphs=1, pieces=layers + 1, unique_pieces=unique, backend_compilations=unique
    )


@pytest.mark.parametrize("layers", [32])
def test_decoder_inductor(layers, layername_mode, layername_impl, layername_device, compile_counter):
    """Every piece goes to inductor; torch's FX-graph cache compiles 3 with hoisted names (N+1 with strings).

    The counts are torch's: ``inductor_compiles`` is FX-graph-cache misses, the rest are hits. ``expect``
    also fails if the structural hash disagrees with torch on any piece.
    """
    model = build_model("decoder", layers, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    expected = run(model, model, x)
    actual = run(model, compile_counter.compile(model, compiler="inductor"), x)
    assert actual.device.type == layername_device
    torch.testing.assert_close(actual, expected)
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


def test_second_call_does_not_recompile(layername_mode, layername_impl, layername_device, compile_counter):
    model = build_model("decoder", 4, layername_impl, layername_mode, device=layername_device)
    compiled = compile_counter.compile(model, compiler="eager")
    for seed in range(3):
        x = model.example_input(seed)
        torch.testing.assert_close(run(model, compiled, x), run(model, model, x))
    compile_counter.expect(dynamo_frames=1, recompiles=0, backend_compilations=compile_counter.stats.unique_pieces)


@pytest.mark.layername(modes=["opaque"])
def test_broken_op_is_caught(layername_mode, layername_impl, layername_device, compile_counter):
    """One op still taking ``str`` in an opaque model: the count assertion fails and names the op and string."""
    model = break_model(build_model("decoder", 16, layername_impl, layername_mode, device=layername_device))
    x = model.example_input()
    torch.testing.assert_close(run(model, compile_counter.compile(model, compiler="eager"), x), run(model, model, x))
    with pytest.raises(CountMismatch) as caught:
        compile_counter.expect(unique_pieces=3)
    message = str(caught.value)
    assert "unique_pieces" in message and "17" in message
    assert OP_NAME in message and "'model.layers.3.mlp'" in message
