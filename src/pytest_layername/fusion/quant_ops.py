"""Custom ops the fusion passes match (static quant, rotary) and emit (fused attention+quant, rope+KV update).

Same namespace scheme as :mod:`pytest_layername.harness.ops`: ops taking a layer name exist in an opaque and a
``_str`` string variant; ``static_scaled_quant`` and ``rotary_embedding`` take no layer name and are
shared by both modes. Every fused op has a real eager body computing exactly what the unfused ops
compute, so compiled fused models can be compared with eager unfused ones. Op bodies count their real
executions into :func:`op_calls` logs (fake implementations do not), so tests can see which ops ran.
"""

# No ``from __future__ import annotations``: torch.library reads the annotations as real types.

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..core.implementation import Implementation
from ..core.modes import Mode
from ..harness.custom_ops import define_op, qualified_name
from ..harness.ops import STRING_SUFFIX, OpSet, get_ops

#: Largest finite magnitude of each quantized dtype the quant op can produce.
QUANT_MAX: dict[torch.dtype, float] = {
    torch.float8_e4m3fn: float(torch.finfo(torch.float8_e4m3fn).max),
    torch.float8_e5m2: float(torch.finfo(torch.float8_e5m2).max),
    torch.int8: float(torch.iinfo(torch.int8).max),
}
#: Quantized dtypes the fused attention op (and so the attention+quant pass) supports.
FUSED_QUANT_DTYPES: tuple[torch.dtype, ...] = (torch.float8_e4m3fn, torch.int8)


class QuantDtypeError(ValueError):
    """A quantized dtype the op or pass does not support."""


def check_quant_dtype(dtype: torch.dtype, supported: tuple[torch.dtype, ...] = tuple(QUANT_MAX)) -> torch.dtype:
    """Return ``dtype`` if it is in ``supported``, else raise :class:`QuantDtypeError` naming the choices."""
    if dtype not in supported:
        names = ", ".join(str(d) for d in supported)
        raise QuantDtypeError(f"unsupported quantized dtype {dtype}; supported: {names}")
    return dtype


def quantize(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Static per-tensor quantization: ``x / scale`` saturated to ``dtype`` (integers rounded)."""
    bound = QUANT_MAX[check_quant_dtype(dtype)]
    scaled = x.float() / scale.float()
    if not dtype.is_floating_point:
        scaled = scaled.round()
        return scaled.clamp(-bound - 1, bound).to(dtype)
    return scaled.clamp(-bound, bound).to(dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`quantize` up to rounding: ``q * scale`` in ``dtype``."""
    return q.to(dtype) * scale.to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Neox-style rotary embedding of ``x`` [tokens, heads, head_dim] with ``cos``/``sin`` [tokens, head_dim/2]."""
    first, second = x.chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


_call_logs: list[Counter[tuple[str, str | None]]] = []


@contextlib.contextmanager
def op_calls() -> Iterator[Counter[tuple[str, str | None]]]:
    """Count real executions of this module's ops inside the block, keyed ``(op name, layer or None)``."""
    log: Counter[tuple[str, str | None]] = Counter()
    _call_logs.append(log)
    try:
        yield log
    finally:
        _call_logs.remove(log)


def _record(op: str, layer: str | None) -> None:
    for log in _call_logs:
        log[(op, layer)] += 1


@dataclass(frozen=True)
class FusionOpSet:
    """The base layer-name ops plus the quant, rotary and fused ops for one implementation and mode."""

    base: OpSet
    static_scaled_quant: torch._ops.OpOverloadPacket
    rotary_embedding: torch._ops.OpOverloadPacket
    attention_with_quant_output: torch._ops.OpOverloadPacket
    rope_kv_cache_update: torch._ops.OpOverloadPacket

    @property
    def mode(self) -> Mode:
        return self.base.mode

    @property
    def namespace(self) -> str:
        return self.base.namespace


def _shared_ops(namespace: str) -> tuple[torch._ops.OpOverloadPacket, torch._ops.OpOverloadPacket]:
    """``static_scaled_quant`` and ``rotary_embedding``: no layer name, one registration per namespace."""

    def static_scaled_quant(input: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        _record("static_scaled_quant", None)
        return quantize(input, scale, dtype)

    def static_scaled_quant_fake(input, scale, dtype):
        check_quant_dtype(dtype)
        return torch.empty_like(input, dtype=dtype)

    def rotary_embedding(
        query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _record("rotary_embedding", None)
        return rotate(query, cos, sin), rotate(key, cos, sin)

    def rotary_embedding_fake(query, key, cos, sin):
        return torch.empty_like(query), torch.empty_like(key)

    return (
        define_op(f"{namespace}::static_scaled_quant", static_scaled_quant, fake=static_scaled_quant_fake),
        define_op(f"{namespace}::rotary_embedding", rotary_embedding, fake=rotary_embedding_fake),
    )


def _fused_ops(impl: Implementation, base: OpSet) -> tuple[torch._ops.OpOverloadPacket, torch._ops.OpOverloadPacket]:
    """The fused layer-name ops for ``base.mode``, their ``layer_name`` typed as the base ops'."""
    layer_name_type = impl.layer_name_type(base.mode, "register opaque fusion ops")
    suffix = "" if base.mode == "opaque" else STRING_SUFFIX
    resolve = impl.resolve

    def attention_with_quant_output(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        layer_name: object,
        kv_cache_dummy_dep: torch.Tensor,
        scale: torch.Tensor,
    ) -> None:
        _record("attention_with_quant_output", resolve(layer_name))
        check_quant_dtype(output.dtype, FUSED_QUANT_DTYPES)
        attended = torch.empty(output.shape, dtype=query.dtype, device=query.device)
        base.attention_with_output(query, key, value, attended, layer_name, kv_cache_dummy_dep)
        output.copy_(quantize(attended, scale, output.dtype))

    def attention_with_quant_output_fake(query, key, value, output, layer_name, kv_cache_dummy_dep, scale):
        check_quant_dtype(output.dtype, FUSED_QUANT_DTYPES)
        return None

    def rope_kv_cache_update(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer_name: object,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _record("rope_kv_cache_update", resolve(layer_name))
        rotated_query, rotated_key = rotate(query, cos, sin), rotate(key, cos, sin)
        dep = base.kv_cache_update(rotated_key, value, layer_name)
        return rotated_query, rotated_key, dep

    def rope_kv_cache_update_fake(query, key, value, cos, sin, layer_name):
        return torch.empty_like(query), torch.empty_like(key), key.new_empty((0,))

    ns = base.namespace
    return (
        define_op(
            f"{ns}::attention_with_quant_output{suffix}",
            attention_with_quant_output,
            fake=attention_with_quant_output_fake,
            mutates_args=("output",),
            layer_name_type=layer_name_type,
        ),
        define_op(
            f"{ns}::rope_kv_cache_update{suffix}",
            rope_kv_cache_update,
            fake=rope_kv_cache_update_fake,
            layer_name_type=layer_name_type,
        ),
    )


_SHARED: dict[str, tuple[torch._ops.OpOverloadPacket, torch._ops.OpOverloadPacket]] = {}
_REGISTERED: dict[tuple[str, Mode], FusionOpSet] = {}


def get_fusion_ops(impl: Implementation, mode: Mode) -> FusionOpSet:
    """The fusion ops for ``impl`` in ``mode``, registered on first use (once per process)."""
    key = (impl.namespace, mode)
    if key not in _REGISTERED:
        base = get_ops(impl, mode)  # raises ModeError when opaque mode is unavailable
        if base.namespace not in _SHARED:
            _SHARED[base.namespace] = _shared_ops(base.namespace)
        quant, rotary = _SHARED[base.namespace]
        fused_attention, fused_rope = _fused_ops(impl, base)
        _REGISTERED[key] = FusionOpSet(base, quant, rotary, fused_attention, fused_rope)
    return _REGISTERED[key]


def op_names(ops: FusionOpSet) -> dict[str, str]:
    """Qualified names of every op in ``ops`` (``namespace::name``), keyed by role."""
    return {
        "kv_cache_update": qualified_name(ops.base.kv_cache_update),
        "attention_with_output": qualified_name(ops.base.attention_with_output),
        "static_scaled_quant": qualified_name(ops.static_scaled_quant),
        "rotary_embedding": qualified_name(ops.rotary_embedding),
        "attention_with_quant_output": qualified_name(ops.attention_with_quant_output),
        "rope_kv_cache_update": qualified_name(ops.rope_kv_cache_update),
    }
