"""Library-level tests of the fusion passes (no plugin fixtures): registration, fused ops, errors, caching ids."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from torch import fx
from torch._inductor.pattern_matcher import (
    KeywordArg,
    MultiOutputPattern,
    PatternMatcherPass,
    _TargetArgsExpr,
    fwd_only,
    register_replacement,
)
from torch._subclasses import FakeTensorMode

from pytest_layername.compile.session import compile_session
from pytest_layername.core.implementation import load_implementation
from pytest_layername.fusion import (
    AttnQuantFusionPass,
    FusionError,
    FusionPasses,
    QuantDtypeError,
    RopeKVFusionPass,
    attention_layer_names,
    build_fusion_model,
    fusion_passes,
    get_fusion_ops,
    op_calls,
)
from pytest_layername.fusion.log import fusion_log
from pytest_layername.fusion.testing import QUANT_TOLERANCE, fast_cpu_inductor
from pytest_layername.harness.models import ModelError, run

IMPL = load_implementation()
FP8, INT8 = torch.float8_e4m3fn, torch.int8
NAMES = [f"model.layers.{i}.self_attn" for i in range(5)]
MODES = [
    pytest.param(
        "opaque",
        marks=pytest.mark.skipif(bool(IMPL.opaque_unavailable_reason()), reason=str(IMPL.opaque_unavailable_reason())),
    ),
    "string",
]


def _patterns(graph_pass) -> list[Any]:
    return [entry.pattern for entries in graph_pass.matcher.patterns.values() for entry in entries]


def _layer_name_args(pattern: Any) -> list[Any]:
    """What each layer-name op call in ``pattern`` receives as ``layer_name`` (a wildcard or a constant)."""
    found, stack = [], [pattern]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        if isinstance(node, MultiOutputPattern):
            stack.extend(node.outputs)
        if not isinstance(node, _TargetArgsExpr):
            continue
        if "layer_name" in node.kwargs:  # auto_functionalized(op, ..., layer_name=...)
            found.append(node.kwargs["layer_name"])
        elif any(getattr(fn, "_schema", None) and fn._schema.arguments[-1].name == "layer_name" for fn in node.fns):
            found.append(node.args[-1])
        stack.extend(node.args)
        stack.extend(node.kwargs.values())
    return found


@pytest.mark.parametrize("pass_cls", [AttnQuantFusionPass, RopeKVFusionPass])
def test_opaque_registers_one_pattern_with_layer_name_as_wildcard_input(pass_cls):
    if reason := IMPL.opaque_unavailable_reason():
        pytest.skip(reason)
    with fusion_log() as log:
        graph_pass = pass_cls(IMPL, "opaque", layer_names=NAMES)  # names are not needed, and not used
    assert log.patterns(pass_cls.name) == 1
    (pattern,) = _patterns(graph_pass)
    (layer_name,) = _layer_name_args(pattern)
    assert isinstance(layer_name, KeywordArg) and layer_name.name == "layer_name"


@pytest.mark.parametrize("pass_cls", [AttnQuantFusionPass, RopeKVFusionPass])
def test_string_registers_one_pattern_per_layer_with_the_name_baked(pass_cls):
    with fusion_log() as log:
        graph_pass = pass_cls(IMPL, "string", layer_names=NAMES)
    assert log.patterns(pass_cls.name) == len(NAMES)
    baked = [_layer_name_args(pattern) for pattern in _patterns(graph_pass)]
    assert sorted(baked) == [[name] for name in NAMES]  # one pattern per layer, its name a constant


def test_a_str_example_input_is_traced_as_a_constant_not_a_wildcard():
    """Why string mode registers per layer: tracing bakes a ``str`` pattern input into the pattern."""
    update = get_fusion_ops(IMPL, "string").base.kv_cache_update.default

    def search(key, value, layer_name):
        return update(key, value, layer_name)

    matcher = PatternMatcherPass()
    with FakeTensorMode():
        example = [torch.empty(8, 2, 16), torch.empty(8, 2, 16), "probe.layer"]
        register_replacement(search, search, example, fwd_only, matcher)
    (pattern,) = [entry.pattern for entries in matcher.patterns.values() for entry in entries]
    assert _layer_name_args(pattern) == ["probe.layer"]


@pytest.mark.parametrize("mode", MODES)
def test_a_log_opened_later_sees_patterns_when_the_pass_runs(mode):
    graph_pass = AttnQuantFusionPass(IMPL, mode, FP8, layer_names=NAMES[:3])
    graph = fx.symbolic_trace(lambda x: x + 1).graph
    with fusion_log() as log:
        graph_pass(graph)
    assert log.patterns("attn_quant_fusion") == (1 if mode == "opaque" else 3)
    assert log.matched("attn_quant_fusion") == 0
    assert graph_pass.graphs[-1].matched == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [FP8, INT8], ids=["fp8", "int8"])
def test_fused_attention_op_equals_attention_then_quant(mode, dtype):
    model = build_fusion_model(1, IMPL, mode, quant_dtype=dtype)
    ops, attn = get_fusion_ops(IMPL, mode), model.layers[0].mixer
    q, k, v = torch.randn(3, model.tokens, attn.heads, attn.head_dim, generator=torch.Generator().manual_seed(1))
    with model.context(), op_calls() as calls:
        name = IMPL.encode(attn.prefix)
        dep = ops.base.kv_cache_update(k, v, name)
        out = torch.empty_like(q)
        ops.base.attention_with_output(q, k, v, out, name, dep)
        unfused = ops.static_scaled_quant(out, attn.quant_scale, dtype)
        fused = torch.empty_like(q, dtype=dtype)
        ops.attention_with_quant_output(q, k, v, fused, name, dep, attn.quant_scale)
    assert fused.dtype == unfused.dtype == dtype
    assert torch.equal(fused.view(torch.uint8), unfused.view(torch.uint8))
    assert calls[("attention_with_quant_output", attn.prefix)] == 1 and calls[("static_scaled_quant", None)] == 1
    dequantized = fused.to(torch.float32) * attn.quant_scale
    torch.testing.assert_close(dequantized, out, **QUANT_TOLERANCE[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_fused_rope_kv_update_equals_rope_then_update(mode):
    model = build_fusion_model(1, IMPL, mode, rope_layers=None)
    ops, attn = get_fusion_ops(IMPL, mode), model.layers[0].mixer
    q, k, v = torch.randn(3, model.tokens, attn.heads, attn.head_dim, generator=torch.Generator().manual_seed(2))
    before = attn.kv_cache.clone()
    with model.context():
        name = IMPL.encode(attn.prefix)
        rq, rk = ops.rotary_embedding(q, k, attn.rope_cos, attn.rope_sin)
        ops.base.kv_cache_update(rk, v, name)
        unfused_cache = attn.kv_cache.clone()
        attn.kv_cache.copy_(before)  # the layer's own history back, this step's slots unwritten
        fq, fk, dep = ops.rope_kv_cache_update(q, k, v, attn.rope_cos, attn.rope_sin, name)
    assert torch.equal(fq, rq) and torch.equal(fk, rk) and dep.numel() == 0
    assert torch.equal(attn.kv_cache, unfused_cache) and not torch.equal(rk, k)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(QuantDtypeError, match=r"unsupported quantized dtype torch\.float8_e5m2"):
        AttnQuantFusionPass(IMPL, "string", torch.float8_e5m2, layer_names=NAMES)
    with pytest.raises(FusionError, match="string mode bakes layer names into patterns; pass layer_names"):
        RopeKVFusionPass(IMPL, "string")
    with pytest.raises(FusionError, match="distinct non-empty strings"):
        AttnQuantFusionPass(IMPL, "string", layer_names=[NAMES[0], NAMES[0]])
    with pytest.raises(FusionError, match="unknown layer-name mode 'auto'"):
        RopeKVFusionPass(IMPL, "auto", layer_names=NAMES)  # type: ignore[arg-type]
    with pytest.raises(FusionError, match="needs at least one pass"), fusion_passes():
        pass
    ops = get_fusion_ops(IMPL, "string")
    with pytest.raises(QuantDtypeError, match=r"unsupported quantized dtype torch\.float16"):
        ops.static_scaled_quant(torch.ones(2), torch.tensor(1.0), torch.float16)
    with pytest.raises(ModelError, match="at least one layer"):
        build_fusion_model(0, IMPL, "string")
    with pytest.raises(ModelError, match="lists 1 dtypes for 2 layers"):
        build_fusion_model(2, IMPL, "string", quant_dtype=[FP8])
    with pytest.raises(QuantDtypeError, match=r"torch\.float16"):
        build_fusion_model(1, IMPL, "string", quant_dtype=torch.float16)


def test_uuid_is_stable_picklable_and_tracks_configuration():
    first = AttnQuantFusionPass(IMPL, "string", FP8, layer_names=NAMES[:2])
    again = AttnQuantFusionPass(IMPL, "string", FP8, layer_names=NAMES[:2])
    assert first.uuid() == again.uuid()
    assert pickle.loads(pickle.dumps(first.uuid())) == first.uuid()
    others = [
        AttnQuantFusionPass(IMPL, "string", INT8, layer_names=NAMES[:2]),
        AttnQuantFusionPass(IMPL, "string", FP8, layer_names=NAMES[:3]),
        RopeKVFusionPass(IMPL, "string", layer_names=NAMES[:2]),
    ]
    assert len({first.uuid(), *(p.uuid() for p in others)}) == 4
    assert FusionPasses([first, again]).uuid() == (first.uuid(), again.uuid())
    assert FusionPasses([first, lambda graph: None]).uuid() is None  # an anonymous pass disables caching


def test_fusion_passes_keeps_an_already_configured_post_grad_pass():
    from torch._inductor import config

    def existing(graph: fx.Graph) -> None:
        return None

    graph_pass = RopeKVFusionPass(IMPL, "string", layer_names=NAMES[:1])
    with config.patch(post_grad_custom_post_pass=existing), fusion_passes(graph_pass) as combined:
        assert config.post_grad_custom_post_pass is combined
        assert combined.passes == (existing, graph_pass)
        assert config.enable_auto_functionalized_v2 is False


@pytest.mark.parametrize("mode", MODES)
def test_inductor_fuses_only_what_it_should(mode):
    """Layers: fp8 + rope, no quant, int8, fp8 with a per-token scale. Only layer 0 is fused (attn+quant, rope)."""
    model = build_fusion_model(4, IMPL, mode, quant_dtype=[FP8, None, INT8, FP8], rope_layers={0})
    per_token = model.layers[3].mixer
    per_token.quant_scale = per_token.quant_scale.expand(model.tokens, 1, 1).clone()  # not per-tensor
    names = attention_layer_names(model)
    x = model.example_input()
    expected = run(model, model, x)
    with fusion_log() as log, compile_session() as session:
        attn = AttnQuantFusionPass(IMPL, mode, FP8, layer_names=names)
        rope = RopeKVFusionPass(IMPL, mode, layer_names=names)
        compiled = torch.compile(model, backend="inductor", fullgraph=True)
        with fast_cpu_inductor(), fusion_passes(attn, rope), op_calls() as calls:
            actual = run(model, compiled, x)
        inductor_compiles = session.stats.inductor_compiles

    assert inductor_compiles == 1
    assert log.as_dict()["attn_quant_fusion"]["matched"] == 1
    assert log.matched("attn_quant_fusion", f"attn_quant_fusion[{'*' if mode == 'opaque' else names[0]}]") == 1
    assert log.matched("rope_kv_fusion") == 1
    (graph,) = attn.graphs
    assert graph.before[attn.removed_op] == 3 and graph.after[attn.removed_op] == 2  # int8 and per-token stay
    assert graph.after[attn.fused_op] == 1
    assert calls[("attention_with_quant_output", names[0])] == 1 and calls[("static_scaled_quant", None)] == 2
    assert calls[("rope_kv_cache_update", names[0])] == 1 and calls[("rotary_embedding", None)] == 0
    torch.testing.assert_close(actual, expected, **QUANT_TOLERANCE[FP8])


@pytest.mark.parametrize("mode", MODES)
def test_inductor_cache_reuses_fused_artifacts_and_tracks_the_pass_config(mode):
    """Same pass config: a cache hit still runs the fused op. Another config (int8): a miss, compiled anew."""
    model = build_fusion_model(1, IMPL, mode, quant_dtype=FP8)
    names, x = attention_layer_names(model), model.example_input()
    passes, calls, hits = [], [], []
    with compile_session() as session:  # one fresh inductor cache for the three compiles
        for dtype in (FP8, FP8, INT8):
            torch._dynamo.reset()
            before = session.stats
            passes.append(AttnQuantFusionPass(IMPL, mode, dtype, layer_names=names))
            with fast_cpu_inductor(), fusion_passes(passes[-1]), op_calls() as ran:
                run(model, torch.compile(model, backend="inductor", fullgraph=True), x)
            after = session.stats
            calls.append(ran)
            hits.append(
                after.fx_graph_cache_hits + after.aot_autograd_cache_hits
                > before.fx_graph_cache_hits + before.aot_autograd_cache_hits
            )
    assert hits == [False, True, False]
    assert [[g.matched for g in p.graphs] for p in passes] == [[1], [], [0]]  # a cache hit runs no pass
    assert calls[0] == calls[1] == {("attention_with_quant_output", names[0]): 1}
    assert calls[2] == {("static_scaled_quant", None): 1}


@pytest.mark.parametrize("mode", ["opaque", "string"])
def test_quantization_is_real(mode):
    """The static quant changes the model's output (so fusion tests compare quantized numerics), within tolerance."""
    for dtype in (FP8, INT8):
        quantized = build_fusion_model(2, IMPL, mode, quant_dtype=dtype)
        unquantized = build_fusion_model(2, IMPL, mode, quant_dtype=None)
        x = quantized.example_input()
        expected, float_out = run(quantized, quantized, x), run(unquantized, unquantized, x)
        assert not torch.equal(expected, float_out)
        torch.testing.assert_close(expected, float_out, **QUANT_TOLERANCE[dtype])
