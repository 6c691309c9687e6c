"""What compiling costs, as torch reports it.

Owns the piecewise backend (:mod:`.backend`), structural graph hashing (:mod:`.graph_hash`), compile
statistics (:mod:`.stats`), Dynamo's graph breaks (:mod:`.graph_breaks`), sessions that read them from
torch and observe compiles they do not drive (:mod:`.session`), engine counter adapters (:mod:`.engines`),
start-ups in fresh processes on a cache directory (:mod:`.process_start`), count expectations and why they
failed (:mod:`.expectations`, :mod:`.piece_diff`), torch's structured trace of a block of code
(:mod:`.trace_file`) and measurement of the reference models
(:mod:`.measure`). Imports :mod:`..core` and :mod:`..harness`.
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
