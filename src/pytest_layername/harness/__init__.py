"""The reference workload: custom ops that take a layer name, and models built from them.

Owns the one op-definition helper (:mod:`.custom_ops`), the attention/KV-cache/MoE/Mamba ops
(:mod:`.ops`) and the reference models (:mod:`.models`). Imports :mod:`..core`.
"""
