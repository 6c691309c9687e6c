"""The reference workload: custom ops that take a layer name, and models built from them.

Owns the one op-definition helper (:mod:`.custom_ops`), the attention/KV-cache/MoE/Mamba ops
(:mod:`.ops`) and the reference models (:mod:`.models`). Imports :mod:`..core`.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "FieldCheckError": "custom_ops",
        "OpaqueDefaultError": "custom_ops",
        "check_opaque_defaults": "custom_ops",
        "define_op": "custom_ops",
        "qualified_name": "custom_ops",
        "MODEL_NAMES": "models",
        "ModelError": "models",
        "ReferenceModel": "models",
        "build_model": "models",
        "run": "models",
        "STRING_SUFFIX": "ops",
        "OpSet": "ops",
        "get_ops": "ops",
    },
)
