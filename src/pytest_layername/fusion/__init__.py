"""Inductor fusion passes around layer-name ops: one wildcard pattern (opaque) or one per layer (string).

Owns the passes (:mod:`.passes`, :mod:`.attn_quant`, :mod:`.rope_kv`), their quant/RoPE ops
(:mod:`.quant_ops`), the fusion model, the shared test settings (:mod:`.testing`) and the log of pattern
registrations and matches that ``fusion_matches`` reads (:mod:`.log`, which an engine's own passes report
into). Imports :mod:`..core`, :mod:`..harness` and :mod:`..compile`.

Importing the package imports no torch (an engine's fusion tests import :mod:`.log` alone): the names
below load their modules on first use.
"""

from __future__ import annotations

from .._exports import lazy_exports

_EXPORTS = {
    "AttnQuantFusionPass": "attn_quant",
    "attention_layer_names": "model",
    "build_fusion_model": "model",
    "quantized_layer_names": "model",
    "rope_layer_names": "model",
    "FusionError": "passes",
    "FusionPasses": "passes",
    "GraphRecord": "passes",
    "LayerNameFusionPass": "passes",
    "fusion_passes": "passes",
    "graph_op_counts": "passes",
    "FUSED_QUANT_DTYPES": "quant_ops",
    "QuantDtypeError": "quant_ops",
    "get_fusion_ops": "quant_ops",
    "op_calls": "quant_ops",
    "op_names": "quant_ops",
    "RopeKVFusionPass": "rope_kv",
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
