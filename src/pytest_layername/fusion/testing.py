"""Shared settings for fusion tests: the piecewise split that keeps attention+quant inside pieces, tolerances.

The default piecewise backend splits at attention, so attention runs eagerly outside every compiled
piece and no inductor pass can see it. Fusion tests split at ``kv_cache_update`` instead
(:data:`FUSION_SPLITTING_OPS`): attention, quant, dequant and o_proj then sit inside compiled pieces.
A model of N layers gives N+1 pieces: before layer 0's KV update, N-1 identical middle pieces
(attention of layer i .. QKV of layer i+1) and the last piece (attention of the last layer, final norm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

#: Split at the KV-cache update so attention + quant land inside compiled pieces.
FUSION_SPLITTING_OPS: tuple[str, ...] = ("*::kv_cache_update*",)
#: Structurally distinct pieces of a fusion model split at :data:`FUSION_SPLITTING_OPS` (first, middle, last).
MIN_UNIQUE_PIECES = 3

#: Compiled fused model vs eager unfused model. A float difference upstream may move a value across a
#: rounding boundary: one step of e4m3 (3 mantissa bits, 12.5 % relative) or of int8 (one ``scale``).
QUANT_TOLERANCE: dict[torch.dtype, dict[str, float]] = {
    torch.float8_e4m3fn: {"atol": 0.1, "rtol": 0.1},
    torch.int8: {"atol": 0.05, "rtol": 0.05},
}

#: Inductor settings that only make CPU test compiles cheaper: scalar C++ (no vector-ISA probe and
#: smaller kernels) and in-process compilation (no worker pool on a 2-core machine). No precompiled
#: headers: inductor keeps them machine-wide, keyed without the vec-ISA choice, so a header built under
#: this setting (no at::vec) would break a later vectorized compile in the same process.
FAST_CPU_INDUCTOR: dict[str, Any] = {
    "cpp.vec_isa_ok": False,
    "compile_threads": 1,
    "cpp_cache_precompile_headers": False,
}


@contextlib.contextmanager
def fast_cpu_inductor() -> Iterator[None]:
    """Apply :data:`FAST_CPU_INDUCTOR` when compiling for CPU (no effect on which patterns match)."""
    from torch._inductor import config

    with config.patch(FAST_CPU_INDUCTOR):
        yield
