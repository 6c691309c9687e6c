"""What compiling costs, as torch reports it.

Owns the piecewise backend (:mod:`.backend`), structural graph hashing (:mod:`.graph_hash`), compile
statistics (:mod:`.stats`), sessions that read them from torch (:mod:`.session`), count expectations and
measurement of the reference models (:mod:`.measure`). Imports :mod:`..core` and :mod:`..harness`.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "INNER_COMPILERS": "backend",
        "BackendError": "backend",
        "PiecewiseBackend": "backend",
        "CountMismatch": "expectations",
        "expect_counts": "expectations",
        "BakedConstant": "graph_hash",
        "baked_constants": "graph_hash",
        "measure_compile": "measure",
        "CompileSession": "session",
        "compile_session": "session",
        "COUNTER_FIELDS": "stats",
        "CompileStats": "stats",
        "counter_values": "stats",
    },
)
