"""Run vLLM's own fusion passes (AttnQuantFusionPass, RopeKVCacheFusionPass) inside torch.compile on CPU.

Private vLLM APIs this integration relies on (vLLM 0.33.0; a vLLM upgrade that moves any of them breaks
these tests first, which is the point: check this list when it does):

- ``vllm.utils.torch_utils``: ``_USE_LAYERNAME`` (module global, flipped per mode by the plugin),
  ``_encode_layer_name``, ``LayerName``.
- ``vllm.compilation.passes.fusion.attn_quant_fusion``: ``AttnQuantFusionPass`` (``pm_pass``,
  ``matched_count``), and its module-level copy ``_USE_LAYERNAME`` (``from ... import _USE_LAYERNAME``:
  flipping torch_utils alone does not reach it; :func:`layername_switch` patches it too).
- ``vllm.compilation.passes.fusion.rope_kvcache_fusion``: ``RopeKVCacheFusionPass`` (``patterns``,
  ``matched_count``) and its module-level ``_USE_LAYERNAME`` copy.
- ``vllm.compilation.passes.utility``: ``NoOpEliminationPass``, ``SplitCoalescingPass``,
  ``ScatterSplitReplacementPass`` (run before the RoPE pass, as vLLM's pass manager does).
- ``vllm.compilation.passes.vllm_inductor_pass``: reads ``current_platform.device_type`` at import
  (``DEVICE_TYPE``); on a CPU-only machine vLLM's platform is ``UnspecifiedPlatform`` with ``""``, so
  :func:`prepare` sets ``"cpu"`` before importing it.
- ``vllm.config``: ``VllmConfig``, ``CompilationConfig(custom_ops=...)``, ``set_current_vllm_config``,
  ``compilation_config.static_forward_context`` (where the passes find attention layers), and
  ``VllmConfig.model_config`` (only ``.dtype`` is read; a stand-in object is assigned).
- ``vllm.model_executor.layers.attention.Attention``: the passes keep ``isinstance(layer, Attention)``
  layers and read ``layer_name``, ``num_heads``, ``num_kv_heads``, ``head_size``, ``head_size_v`` and
  ``impl.fused_output_quant_supported(key)`` / ``impl.fused_rope_kvcache_supported()``; the layers here are
  ``Attention`` objects built without ``Attention.__init__`` (which selects a GPU backend).
- Ops: ``torch.ops.vllm.unified_attention_with_output``, ``torch.ops.vllm.unified_kv_cache_update``
  (registered by vLLM's Python); ``torch.ops._C.*`` ops the fusion modules touch at import, which live in
  ``vllm._C`` (a CUDA extension that does not load on CPU): declared here by schema with no-op fake
  kernels (:data:`C_SCHEMAS`) when missing.
- Inductor: vLLM's passes match ``auto_functionalized`` v1 (``enable_auto_functionalized_v2=False``); they
  run as ``post_grad_custom_post_pass`` and compilation stops right after them (the fused ops have no
  CPU kernels), see :class:`StopAfterPasses`.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import fx, nn

from pytest_layername.fusion.log import record_match, record_patterns

#: The pass names the fusion counts are reported under (``fusion_matches`` and the JSON report).
ATTN_QUANT = "vllm.attn_quant_fusion"
ROPE_KVCACHE = "vllm.rope_kvcache_fusion"

#: ``torch.ops._C`` ops vLLM's fusion modules reference at import (schemas of vLLM 0.33.0's csrc bindings).
C_SCHEMAS = {
    "rotary_embedding": "rotary_embedding(Tensor positions, Tensor(a!) query, Tensor(b!)? key, int head_size, "
    "Tensor cos_sin_cache, bool is_neox) -> ()",
    "static_scaled_fp8_quant": "static_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor scale, "
    "int[]? group_shape=None) -> ()",
    "dynamic_scaled_fp8_quant": "dynamic_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor(b!) scale) -> ()",
    "dynamic_per_token_scaled_fp8_quant": "dynamic_per_token_scaled_fp8_quant(Tensor(a!) result, Tensor input, "
    "Tensor(b!) scale, Tensor? scale_ub) -> ()",
    "silu_and_mul": "silu_and_mul(Tensor(a!) result, Tensor input) -> ()",
    "rms_norm": "rms_norm(Tensor(a!) result, Tensor input, Tensor weight, float epsilon) -> ()",
    "fused_add_rms_norm": "fused_add_rms_norm(Tensor(a!) input, Tensor(b!) residual, Tensor weight, "
    "float epsilon) -> ()",
    "rms_norm_static_fp8_quant": "rms_norm_static_fp8_quant(Tensor(a!) result, Tensor input, Tensor weight, "
    "Tensor scale, float epsilon) -> ()",
    "fused_add_rms_norm_static_fp8_quant": "fused_add_rms_norm_static_fp8_quant(Tensor(a!) result, Tensor input, "
    "Tensor(b!) residual, Tensor weight, Tensor scale, float epsilon) -> ()",
    "rms_norm_dynamic_per_token_quant": "rms_norm_dynamic_per_token_quant(Tensor(a!) result, Tensor input, "
    "Tensor weight, Tensor(b!) scale, float epsilon, Tensor? scale_ub, Tensor(c!)? residual) -> ()",
}

_C_LIBRARY: torch.library.Library | None = None
_PREPARED = False


def _declare_c_ops() -> list[str]:
    """Declare the ``_C`` ops that ``vllm._C`` would register, where it did not load; returns those declared."""
    global _C_LIBRARY
    declared = []
    for name, schema in C_SCHEMAS.items():
        if hasattr(torch.ops._C, name):
            continue
        if _C_LIBRARY is None:
            _C_LIBRARY = torch.library.Library("_C", "FRAGMENT")
        _C_LIBRARY.define(schema)
        torch.library.register_fake(f"_C::{name}", lambda *args, **kwargs: None, lib=_C_LIBRARY)
        declared.append(name)
    return declared


def prepare() -> None:
    """CPU device type for vLLM's pass modules, the ``_C`` ops they need; then import them."""
    global _PREPARED
    if _PREPARED:
        return
    from vllm.platforms import current_platform

    if not current_platform.device_type:
        current_platform.device_type = "cpu"
    _declare_c_ops()
    import vllm.compilation.passes.fusion.attn_quant_fusion
    import vllm.compilation.passes.fusion.rope_kvcache_fusion  # noqa: F401

    _PREPARED = True


@contextlib.contextmanager
def layername_switch() -> Iterator[bool]:
    """Make the fusion modules' copies of ``_USE_LAYERNAME`` follow ``vllm.utils.torch_utils._USE_LAYERNAME``."""
    import vllm.compilation.passes.fusion.attn_quant_fusion as attn_module
    import vllm.compilation.passes.fusion.rope_kvcache_fusion as rope_module
    import vllm.utils.torch_utils as torch_utils

    use = bool(torch_utils._USE_LAYERNAME)
    saved = [(m, m._USE_LAYERNAME) for m in (attn_module, rope_module)]
    try:
        for module, _ in saved:
            module._USE_LAYERNAME = use
        yield use
    finally:
        for module, value in saved:
            module._USE_LAYERNAME = value


class _FusingImpl:
    """An attention backend impl that supports fusing output quant and RoPE + KV-cache update."""

    def fused_output_quant_supported(self, quant_key: Any) -> bool:
        return True

    def fused_rope_kvcache_supported(self) -> bool:
        return True


def attention_layer(name: str, num_heads: int, num_kv_heads: int, head_size: int) -> nn.Module:
    """A vLLM ``Attention`` with what the fusion passes read (``Attention.__init__`` selects a GPU backend)."""
    from vllm.model_executor.layers.attention import Attention

    layer = Attention.__new__(Attention)
    nn.Module.__init__(layer)
    layer.layer_name = name
    layer.num_heads, layer.num_kv_heads = num_heads, num_kv_heads
    layer.head_size = layer.head_size_v = head_size
    layer.impl = _FusingImpl()
    return layer


@dataclass(frozen=True)
class Shape:
    layers: int = 4
    tokens: int = 8
    num_heads: int = 4
    num_kv_heads: int = 2
    head_size: int = 16
    dtype: torch.dtype = torch.bfloat16

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_size

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_size

    def names(self) -> list[str]:
        return [f"model.layers.{i}.self_attn.attn" for i in range(self.layers)]


def vllm_config(shape: Shape, custom_ops: list[str], registered: list[str]) -> Any:
    """A ``VllmConfig`` whose forward context holds attention layers for ``registered`` names only."""
    from vllm.config import CompilationConfig, VllmConfig

    config = VllmConfig(compilation_config=CompilationConfig(custom_ops=custom_ops))
    object.__setattr__(config, "model_config", SimpleNamespace(dtype=shape.dtype))
    context = config.compilation_config.static_forward_context
    for name in registered:
        context[name] = attention_layer(name, shape.num_heads, shape.num_kv_heads, shape.head_size)
    return config


# -- the graphs: what vLLM's Attention.forward and RotaryEmbedding put in the graph, layer after layer ----


def attention_block(shape: Shape, name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` (use_direct_call off): views, kv-cache update, attention into ``output``."""
    from vllm.utils.torch_utils import _encode_layer_name

    tokens = q.shape[0]
    output = torch.empty(tokens, shape.q_size, dtype=q.dtype, device=q.device)
    q = q.view(-1, shape.num_heads, shape.head_size)
    output = output.view(-1, shape.num_heads, shape.head_size)
    k = k.view(-1, shape.num_kv_heads, shape.head_size)
    v = v.view(-1, shape.num_kv_heads, shape.head_size)
    encoded = _encode_layer_name(name)
    dep = torch.ops.vllm.unified_kv_cache_update(k, v, encoded)
    torch.ops.vllm.unified_attention_with_output(q, k, v, output, encoded, kv_cache_dummy_dep=dep)
    # The literal token count, as the engine's static-shape graph has it (view(-1, H*D) does not match).
    return output.view(tokens, shape.q_size)


def attn_quant_model(shape: Shape) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """Per layer: qkv projection, attention, static FP8 quant of its output (the o_proj input), dequant."""
    names = shape.names()
    fp8 = torch.float8_e4m3fn

    def forward(hidden: torch.Tensor, w_qkv: torch.Tensor, w_o: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        for name in names:
            qkv = hidden @ w_qkv
            q, k, v = qkv.split([shape.q_size, shape.kv_size, shape.kv_size], dim=-1)
            attn = attention_block(shape, name, q, k, v)
            quant = torch.empty(attn.shape, dtype=fp8, device=attn.device)
            torch.ops._C.static_scaled_fp8_quant(quant, attn, scale, [-1, -1])
            hidden = (quant.to(shape.dtype) * scale.to(shape.dtype)) @ w_o
        return hidden

    hidden = torch.randn(shape.tokens, shape.q_size, dtype=shape.dtype)
    w_qkv = torch.randn(shape.q_size, shape.q_size + 2 * shape.kv_size, dtype=shape.dtype)
    w_o = torch.randn(shape.q_size, shape.q_size, dtype=shape.dtype)
    return forward, (hidden, w_qkv, w_o, torch.ones(1, 1, dtype=torch.float32))


def rope_kvcache_model(shape: Shape) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """Per layer: qkv projection, split, RoPE on q and k in place (``_C.rotary_embedding``), attention."""
    names = shape.names()

    def forward(
        hidden: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, w_qkv: torch.Tensor, w_o: torch.Tensor
    ) -> torch.Tensor:
        for name in names:
            qkv = hidden @ w_qkv
            q, k, v = qkv.split([shape.q_size, shape.kv_size, shape.kv_size], dim=-1)
            torch.ops._C.rotary_embedding(positions, q, k, shape.head_size, cos_sin, True)
            hidden = attention_block(shape, name, q, k, v) @ w_o
        return hidden

    hidden = torch.randn(shape.tokens, shape.q_size, dtype=shape.dtype)
    positions = torch.arange(shape.tokens, dtype=torch.int64)
    cos_sin = torch.randn(4096, shape.head_size, dtype=shape.dtype)
    w_qkv = torch.randn(shape.q_size, shape.q_size + 2 * shape.kv_size, dtype=shape.dtype)
    w_o = torch.randn(shape.q_size, shape.q_size, dtype=shape.dtype)
    return forward, (hidden, positions, cos_sin, w_qkv, w_o)


# -- running the passes inside torch.compile -------------------------------------------------------------


class _Stopped(Exception):
    """Raised after vLLM's passes ran: the fused ops have no CPU kernels, nothing is left to compile."""


@dataclass
class FusionRun:
    """What one compile did: the pass's patterns, its matches, and op counts before and after it."""

    pass_name: str
    patterns: int
    matched: int
    before: Counter[str] = field(default_factory=Counter)
    after: Counter[str] = field(default_factory=Counter)
    fused_layer_names: list[str] = field(default_factory=list)  # str names baked in the fused ops (string mode)


def op_counts(graph: fx.Graph) -> Counter[str]:
    """Ops per name in a post-grad graph, ``auto_functionalized`` counted by the op it wraps."""
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        target = node.args[0] if "auto_functionalized" in str(node.target) and node.args else node.target
        counts[str(getattr(target, "_name", target))] += 1
    return counts


def _layer_name_args(graph: fx.Graph, op_name: str, fused: Callable[[fx.Node], bool] = lambda n: True) -> list[str]:
    """The ``layer_name`` of each fused ``op_name`` call: the string (string mode) or ``<LayerName input>``."""
    names = []
    for node in graph.nodes:
        target = node.args[0] if "auto_functionalized" in str(node.target) and node.args else node.target
        if str(getattr(target, "_name", "")) == op_name and fused(node):
            value = node.kwargs.get("layer_name")
            names.append(value if isinstance(value, str) else "<LayerName input>")
    return names


class StopAfterPasses(torch._inductor.custom_graph_pass.CustomGraphPass):
    """inductor's ``post_grad_custom_post_pass``: run ``passes`` on the post-grad graph, record, stop."""

    def __init__(self, passes: list[Callable[[fx.Graph], None]], record: Callable[[fx.Graph, fx.Graph], None]):
        self.passes = passes
        self.record = record

    def __call__(self, graph: fx.Graph) -> None:
        before = fx.Graph()
        before.graph_copy(graph, {})
        for vllm_pass in self.passes:
            vllm_pass(graph)
        self.record(before, graph)
        raise _Stopped

    def uuid(self) -> Any:
        return None  # never cached


def _compile_until_stopped(fn: Callable[..., Any], args: tuple[Any, ...], post_pass: StopAfterPasses) -> None:
    torch._dynamo.reset()
    patches = {
        "post_grad_custom_post_pass": post_pass,
        "enable_auto_functionalized_v2": False,
        "force_disable_caches": True,
    }
    try:
        with torch._inductor.config.patch(patches), torch.no_grad():
            torch.compile(fn, backend="inductor", fullgraph=True)(*args)
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, _Stopped):
            cause = getattr(cause, "inner_exception", None) or cause.__cause__
        if cause is None:
            raise
    else:
        raise AssertionError("compilation finished without reaching vLLM's passes")
    finally:
        torch._dynamo.reset()


def run_attn_quant(shape: Shape = Shape(), registered: list[str] | None = None) -> FusionRun:
    """AttnQuantFusionPass on ``shape.layers`` layers; ``registered``: the layers in the forward context."""
    prepare()
    from vllm.compilation.passes.fusion.attn_quant_fusion import AttnQuantFusionPass
    from vllm.config import set_current_vllm_config

    registered = shape.names() if registered is None else registered
    config = vllm_config(shape, ["+quant_fp8"], registered)
    with layername_switch() as use_layername, set_current_vllm_config(config):
        fusion = AttnQuantFusionPass(config)
        pattern_names = [
            f"attn_fp8_static_quant[{'*' if use_layername else p._layer_name}]" for p in fusion._pattern_replacements
        ]
        patterns = sum(len(v) for v in fusion.pm_pass.patterns.values())
        run = FusionRun(ATTN_QUANT, patterns, 0)

        def record(before: fx.Graph, after: fx.Graph) -> None:
            run.matched = fusion.matched_count
            run.before, run.after = op_counts(before), op_counts(after)
            run.fused_layer_names = _layer_name_args(
                after, "vllm::unified_attention_with_output", lambda n: n.kwargs.get("output_scale") is not None
            )

        fn, args = attn_quant_model(shape)
        _compile_until_stopped(fn, args, StopAfterPasses([fusion], record))
    _report(run, pattern_names)
    return run


def run_rope_kvcache(shape: Shape = Shape(), registered: list[str] | None = None) -> FusionRun:
    """NoOpElimination, SplitCoalescing, ScatterSplitReplacement, then RopeKVCacheFusionPass."""
    prepare()
    from vllm.compilation.passes.fusion.rope_kvcache_fusion import RopeKVCacheFusionPass
    from vllm.compilation.passes.utility.noop_elimination import NoOpEliminationPass
    from vllm.compilation.passes.utility.scatter_split_replace import ScatterSplitReplacementPass
    from vllm.compilation.passes.utility.split_coalescing import SplitCoalescingPass
    from vllm.config import set_current_vllm_config

    registered = shape.names() if registered is None else registered
    config = vllm_config(shape, ["+rotary_embedding"], registered)
    with layername_switch(), set_current_vllm_config(config):
        fusion = RopeKVCacheFusionPass(config)
        patterns = sum(len(v) for v in fusion.patterns.patterns.values())
        run = FusionRun(ROPE_KVCACHE, patterns, 0)
        cleanup = [NoOpEliminationPass(config), SplitCoalescingPass(config), ScatterSplitReplacementPass(config)]

        def record(before: fx.Graph, after: fx.Graph) -> None:
            run.matched = fusion.matched_count
            run.before, run.after = op_counts(before), op_counts(after)
            run.fused_layer_names = _layer_name_args(after, "vllm::fused_rope_and_unified_kv_cache_update")

        fn, args = rope_kvcache_model(shape)
        _compile_until_stopped(fn, args, StopAfterPasses([*cleanup, fusion], record))
    _report(run, [f"rope_kvcache[{i}]" for i in range(patterns)])
    return run


def _report(run: FusionRun, pattern_names: list[str]) -> None:
    """Into the plugin's fusion log (``fusion_matches`` and the JSON report): patterns, and matches per layer."""
    if run.matched != len(run.fused_layer_names):
        raise AssertionError(
            f"{run.pass_name}: the pass counted {run.matched} match(es), the graph after it holds "
            f"{len(run.fused_layer_names)} fused op(s)"
        )
    record_patterns(run.pass_name, pattern_names)
    for layer in run.fused_layer_names:
        record_match(run.pass_name, layer)
