"""Inductor fusion passes around layer-name ops: one wildcard pattern (opaque) or one per layer (string).

Owns the passes (:mod:`.passes`, :mod:`.attn_quant`, :mod:`.rope_kv`), their quant/RoPE ops
(:mod:`.quant_ops`), the fusion model, the shared test settings (:mod:`.testing`) and the log of pattern
registrations and matches that ``fusion_matches`` reads (:mod:`.log`, which an engine's own passes report
into). Imports :mod:`..core`, :mod:`..harness` and :mod:`..compile`.
"""

from .attn_quant import AttnQuantFusionPass
from .model import attention_layer_names, build_fusion_model, quantized_layer_names, rope_layer_names
from .passes import FusionError, FusionPasses, GraphRecord, LayerNameFusionPass, fusion_passes, graph_op_counts
from .quant_ops import FUSED_QUANT_DTYPES, QuantDtypeError, get_fusion_ops, op_calls, op_names
from .rope_kv import RopeKVFusionPass

__all__ = [
    "FUSED_QUANT_DTYPES",
    "AttnQuantFusionPass",
    "FusionError",
    "FusionPasses",
    "GraphRecord",
    "LayerNameFusionPass",
    "QuantDtypeError",
    "RopeKVFusionPass",
    "attention_layer_names",
    "build_fusion_model",
    "fusion_passes",
    "get_fusion_ops",
    "graph_op_counts",
    "op_calls",
    "op_names",
    "quantized_layer_names",
    "rope_layer_names",
]
