"""What only a GPU run shows: Triton code generation with hoisted names, CUDA graphs, CUDA numerics.

The rest of the suite runs on CUDA too with ``--layername-device=cuda`` (models, ops, fusion with fp8
e4m3 static quant, the fixed-stride op, round trips); these tests need a CUDA device whatever the option.
"""

from __future__ import annotations

import pytest
import torch

from pytest_layername.compile.session import compile_session
from pytest_layername.harness.models import build_model, run

pytestmark = pytest.mark.layername_requires_cuda
OPAQUE_UNIQUE = {"decoder": 3, "moe": 3, "hybrid": 4}


@pytest.mark.parametrize("kind", ["decoder", "moe", "hybrid"])
def test_triton_pieces_are_shared_like_on_cpu(kind, layername_mode, layername_impl, compile_counter):
    """Inductor generates Triton kernels for every compiled piece; torch's FX-graph cache reuses them per layer."""
    from torch._inductor import metrics

    layers = 8
    model = build_model(kind, layers, layername_impl, layername_mode, device="cuda")
    x = model.example_input()
    metrics.reset()
    actual = run(model, compile_counter.compile(model, compiler="inductor"), x)
    torch.testing.assert_close(actual, run(model, model, x))
    assert actual.device.type == "cuda"
    assert metrics.generated_kernel_count > 0, "inductor generated no Triton kernel"
    stats = compile_counter.stats
    if layername_mode == "opaque":
        assert stats.fx_graph_cache_misses == OPAQUE_UNIQUE[kind], stats.counts()
    assert stats.fx_graph_cache_misses + stats.fx_graph_cache_hits == stats.pieces == layers + 1
    compile_counter.expect(inductor_compiles=stats.unique_pieces, hash_disagreements=0, recompiles=0)


def test_cudagraph_trees_with_hoisted_inputs(layername_mode, layername_impl):
    """``mode="reduce-overhead"``: CUDA graphs record and replay with LayerName graph inputs.

    ``triton.cudagraph_or_error`` turns a silent cudagraph skip into an error, so a skip cannot pass.
    """
    from torch._dynamo.utils import counters
    from torch._inductor import config
    from torch._inductor.cudagraph_trees import get_manager

    model = build_model("decoder", 4, layername_impl, layername_mode, device="cuda")
    reference = build_model("decoder", 4, layername_impl, layername_mode, device="cuda")
    options = {"triton.cudagraph_or_error": True} if hasattr(config.triton, "cudagraph_or_error") else {}
    with compile_session(), config.patch(options):
        compiled = torch.compile(model, mode="reduce-overhead")
        skips_before = counters["inductor"]["cudagraph_skips"]
        for seed in range(3):  # warm-up, record, replay
            x = reference.example_input(seed)
            torch.testing.assert_close(run(model, compiled, x).clone(), run(reference, reference, x))
        skips = counters["inductor"]["cudagraph_skips"] - skips_before
        manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
        recorded = sum(len(nodes) for nodes in manager.roots.values()) if manager is not None else 0
    assert skips == 0, f"cudagraph trees skipped {skips} graph(s) with {layername_mode} layer names"
    assert recorded >= 1, f"no CUDA graph was recorded with {layername_mode} layer names"
