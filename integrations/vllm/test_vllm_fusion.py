"""vLLM's own AttnQuantFusionPass and RopeKVCacheFusionPass on a 4-layer graph of vLLM's ops, in both modes.

Run with ``--layername-impl=vllm.utils.torch_utils`` (the ``layername_mode`` fixture flips vLLM's
``_USE_LAYERNAME``; :func:`vllm_fusion.layername_switch` carries it into the fusion modules). Counts are read
from the passes (``pm_pass`` patterns, ``matched_count``) and from the post-grad graph before and after them;
they reach the plugin's report as passes ``vllm.attn_quant_fusion`` and ``vllm.rope_kvcache_fusion``.
"""

from __future__ import annotations

import pytest

vllm_fusion = pytest.importorskip("vllm_fusion", reason="needs vLLM (nox -s vllm)")

LAYERS = 4
SHAPE = vllm_fusion.Shape(layers=LAYERS)
NAMES = SHAPE.names()
ATTN, QUANT = "vllm::unified_attention_with_output", "_C::static_scaled_fp8_quant"
ROPE, KV_UPDATE = "_C::rotary_embedding", "vllm::unified_kv_cache_update"
FUSED_ROPE_KV = "vllm::fused_rope_and_unified_kv_cache_update"


@pytest.fixture(autouse=True)
def _vllm_impl(layername_impl):
    if layername_impl.module_name != "vllm.utils.torch_utils":
        pytest.skip(f"run with --layername-impl=vllm.utils.torch_utils (got {layername_impl.module_name})")


def test_attn_quant_fusion(layername_mode, fusion_matches):
    """LayerName: 1 pattern matches all 4 layers; string: 4 patterns (one per layer), 4 matches."""
    run = vllm_fusion.run_attn_quant(SHAPE)
    patterns = 1 if layername_mode == "opaque" else LAYERS
    fusion_matches.expect(vllm_fusion.ATTN_QUANT, patterns=patterns, matched=LAYERS)
    assert (run.patterns, run.matched) == (patterns, LAYERS)
    assert run.before[QUANT] == LAYERS and run.after[QUANT] == 0  # every quant folded into attention
    assert run.after[ATTN] == LAYERS
    expected = ["<LayerName input>"] * LAYERS if layername_mode == "opaque" else NAMES
    assert run.fused_layer_names == expected


def test_rope_kvcache_fusion(layername_mode, fusion_matches):
    """LayerName: 4 patterns (neox x {rope, rope+q-quant}); string: 16 (4 per layer); 4 matches each."""
    run = vllm_fusion.run_rope_kvcache(SHAPE)
    patterns = 4 if layername_mode == "opaque" else 4 * LAYERS
    fusion_matches.expect(vllm_fusion.ROPE_KVCACHE, patterns=patterns, matched=LAYERS)
    assert (run.patterns, run.matched) == (patterns, LAYERS)
    assert run.before[ROPE] == LAYERS and run.before[KV_UPDATE] == LAYERS
    assert run.after[ROPE] == 0 and run.after[KV_UPDATE] == 0 and run.after[FUSED_ROPE_KV] == LAYERS
    expected = ["<LayerName input>"] * LAYERS if layername_mode == "opaque" else NAMES
    assert run.fused_layer_names == expected


@pytest.mark.parametrize("which", ["attn_quant", "rope_kvcache"])
def test_negative_control_only_layer_0_registered(which, layername_mode, fusion_matches):
    """Only layer 0 in the forward context: string mode bakes its name and fuses 1 of 4 layers; the LayerName
    wildcard pattern still fuses all 4 (proof the counts above come from the wildcard, not from registration)."""
    runner = vllm_fusion.run_attn_quant if which == "attn_quant" else vllm_fusion.run_rope_kvcache
    run = runner(SHAPE, registered=NAMES[:1])
    matched = LAYERS if layername_mode == "opaque" else 1
    pass_name = vllm_fusion.ATTN_QUANT if which == "attn_quant" else vllm_fusion.ROPE_KVCACHE
    fusion_matches.expect(pass_name, matched=matched, patterns=1 if which == "attn_quant" else 4)
    if layername_mode == "string":
        assert run.fused_layer_names == NAMES[:1]
        assert fusion_matches.log.matched(pass_name, NAMES[1]) == 0
