"""Fusion passes around layer-name ops: one wildcard pattern in opaque mode, one pattern per layer in string mode.

Every count is read from what torch did: patterns registered and matches replaced come from the
passes' ``PatternMatcherPass`` (via ``fusion_matches``), op counts from the post-grad graphs the
passes saw, compile counts from ``compile_counter``, and op executions from the op bodies themselves.
Outputs are compared with the ground truth (unfused, every layer with its own state, never through the
implementation's encoder or resolver), within the quantization tolerance.
"""

from __future__ import annotations

import pytest
import torch

from pytest_layername.fusion import (
    AttnQuantFusionPass,
    RopeKVFusionPass,
    attention_layer_names,
    build_fusion_model,
    fusion_passes,
    op_calls,
    quantized_layer_names,
    rope_layer_names,
)
from pytest_layername.fusion.testing import (
    FUSION_SPLITTING_OPS,
    MIN_UNIQUE_PIECES,
    QUANT_TOLERANCE,
    fast_cpu_inductor,
)
from pytest_layername.harness.ground_truth import assert_ground_truth
from pytest_layername.harness.models import run

FP8, INT8 = torch.float8_e4m3fn, torch.int8


def _compile_and_run(compile_counter, model, passes, dtype, splitting_ops=()):
    """Run the model compiled with ``passes`` installed, check it against the ground truth; the ops that ran."""
    x = model.example_input()
    assert_ground_truth(model, run(model, model, x), x, stage="eager (unfused)")
    compiled = compile_counter.compile(model, splitting_ops=splitting_ops)
    with fast_cpu_inductor(), fusion_passes(*passes), op_calls() as calls:
        actual = run(model, compiled, x)
    assert_ground_truth(model, actual, x, stage="compiled(inductor, fused)", **QUANT_TOLERANCE[dtype])
    return calls


def _ran_for(calls, op: str) -> list[str]:
    return sorted(layer for (name, layer), count in calls.items() if name == op for _ in range(count))


@pytest.mark.parametrize("layers", [1, 4, pytest.param(16, marks=pytest.mark.layername_slow)])
def test_patterns_and_matches_scale_with_layers(
    layers, layername_mode, layername_impl, layername_device, compile_counter, fusion_matches
):
    """Opaque: 1 pattern matches all N layers; string: N patterns, one match each. Fused graph, same numerics."""
    model = build_fusion_model(
        layers, layername_impl, layername_mode, quant_dtype=FP8, rope_layers=None, device=layername_device
    )
    names = attention_layer_names(model)
    attn = AttnQuantFusionPass(layername_impl, layername_mode, FP8, layer_names=names)
    rope = RopeKVFusionPass(layername_impl, layername_mode, layer_names=names)
    calls = _compile_and_run(compile_counter, model, [attn, rope], FP8)

    patterns = 1 if layername_mode == "opaque" else layers
    fusion_matches.expect("attn_quant_fusion", patterns=patterns, matched=layers)
    fusion_matches.expect("rope_kv_fusion", patterns=patterns, matched=layers)
    compile_counter.expect(pieces=1, inductor_compiles=1)

    (attn_graph,), (rope_graph,) = attn.graphs, rope.graphs
    assert attn_graph.before[attn.removed_op] == layers
    assert attn_graph.after[attn.fused_op] == layers
    assert attn_graph.after[attn.removed_op] == 0
    assert attn_graph.after[attn.op_names["attention_with_output"]] == 0
    assert rope_graph.after[rope.fused_op] == layers
    assert rope_graph.after[rope.removed_op] == 0
    assert rope_graph.after[rope.op_names["kv_cache_update"]] == 0

    assert _ran_for(calls, "attention_with_quant_output") == sorted(names)
    assert _ran_for(calls, "rope_kv_cache_update") == sorted(names)
    assert calls[("static_scaled_quant", None)] == 0 and calls[("rotary_embedding", None)] == 0


def test_layers_the_passes_must_not_fuse_are_left_alone(
    layername_mode, layername_impl, layername_device, compile_counter, fusion_matches
):
    """int8 pass: no quant after attention, a quant to an unsupported dtype (e5m2), no rope: not fused, counted so."""
    dtypes = [INT8, None, torch.float8_e5m2, INT8]
    model = build_fusion_model(
        4, layername_impl, layername_mode, quant_dtype=dtypes, rope_layers={0, 1}, device=layername_device
    )
    names = attention_layer_names(model)
    attn = AttnQuantFusionPass(layername_impl, layername_mode, INT8, layer_names=names)
    rope = RopeKVFusionPass(layername_impl, layername_mode, layer_names=names)
    calls = _compile_and_run(compile_counter, model, [attn, rope], INT8)

    fused_attention, fused_rope = quantized_layer_names(model, INT8), rope_layer_names(model)
    assert fused_attention == [names[0], names[3]] and fused_rope == [names[0], names[1]]
    fusion_matches.expect("attn_quant_fusion", matched=2)
    fusion_matches.expect("rope_kv_fusion", matched=2)
    if layername_mode == "string":
        assert fusion_matches.log.matched("attn_quant_fusion", f"attn_quant_fusion[{names[1]}]") == 0
        assert fusion_matches.log.matched("attn_quant_fusion", f"attn_quant_fusion[{names[2]}]") == 0

    after = attn.graphs[0].after
    assert after[attn.fused_op] == 2
    assert after[attn.op_names["attention_with_output"]] == 2  # layers 1 (no quant) and 2 (e5m2)
    assert after[attn.removed_op] == 1  # the e5m2 quant stays
    assert rope.graphs[0].after[rope.op_names["kv_cache_update"]] == 2  # layers 2 and 3 (no rope)

    assert _ran_for(calls, "attention_with_quant_output") == sorted(fused_attention)
    assert _ran_for(calls, "rope_kv_cache_update") == sorted(fused_rope)
    assert calls[("static_scaled_quant", None)] == 1


@pytest.mark.parametrize("layers", [8, pytest.param(32, marks=pytest.mark.layername_slow)])
def test_piecewise_fuses_inside_pieces(
    layers, layername_mode, layername_impl, layername_device, compile_counter, fusion_matches
):
    """Split at kv_cache_update so attention+quant sit in compiled pieces: opaque 3 unique pieces, string N+1."""
    model = build_fusion_model(layers, layername_impl, layername_mode, quant_dtype=FP8, device=layername_device)
    names = attention_layer_names(model)
    attn = AttnQuantFusionPass(layername_impl, layername_mode, FP8, layer_names=names)
    calls = _compile_and_run(compile_counter, model, [attn], FP8, FUSION_SPLITTING_OPS)

    stats = compile_counter.stats
    minimum = len({p.masked_digest for p in stats.piece_records})  # distinct pieces once names are masked
    assert minimum == MIN_UNIQUE_PIECES
    unique = MIN_UNIQUE_PIECES if layername_mode == "opaque" else layers + 1
    compile_counter.expect(pieces=layers + 1, unique_pieces=unique, inductor_compiles=unique)

    # Every compiled piece holding attention+quant had it fused (the first piece holds no attention).
    with_attention = [g for g in attn.graphs if g.before[attn.op_names["attention_with_output"]]]
    assert len(with_attention) == unique - 1
    for graph in with_attention:
        assert graph.matched == 1
        assert graph.after[attn.fused_op] == 1 and graph.after[attn.removed_op] == 0
    fusion_matches.expect("attn_quant_fusion", patterns=1 if layername_mode == "opaque" else layers, matched=unique - 1)

    # Every layer's attention ran as the fused op (pieces share artifacts in opaque mode), no unfused quant ran.
    assert _ran_for(calls, "attention_with_quant_output") == sorted(names)
    assert calls[("static_scaled_quant", None)] == 0


def test_fusion_model_with_two_digit_names(layername_mode, layername_impl, layername_device, compile_counter):
    """12 layers, every one rotating q/k and quantizing its output: each finds its own state, eager and compiled."""
    model = build_fusion_model(
        12, layername_impl, layername_mode, quant_dtype=FP8, rope_layers=None, device=layername_device
    )
    x = model.example_input()
    assert_ground_truth(model, run(model, model, x), x, stage="eager")
    compiled = compile_counter.compile(model, compiler="eager", splitting_ops=FUSION_SPLITTING_OPS)
    assert_ground_truth(model, run(model, compiled, x), x, stage="compiled(eager)")
    unique = MIN_UNIQUE_PIECES if layername_mode == "opaque" else 13
    compile_counter.expect(pieces=13, unique_pieces=unique, recompiles=0)
