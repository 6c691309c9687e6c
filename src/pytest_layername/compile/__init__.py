"""What compiling costs, as torch reports it.

Owns the piecewise backend (:mod:`.backend`), structural graph hashing (:mod:`.graph_hash`), compile
statistics (:mod:`.stats`), Dynamo's graph breaks (:mod:`.graph_breaks`), sessions that read them from
torch and observe compiles they do not drive (:mod:`.session`), engine counter adapters (:mod:`.engines`),
start-ups in fresh processes on a cache directory (:mod:`.process_start`), what torch's caches said about
each lookup (:mod:`.cache_events`) and what a start on a cache did (:mod:`.start_outcome`), faults injected
into starts (:mod:`.cache_faults`) judged against a reference model's ground truth (:mod:`.reference_truth`),
count expectations and why they failed (:mod:`.expectations`, :mod:`.piece_diff`), torch's structured trace
of a block of code (:mod:`.trace_file`) and measurement of the reference models (:mod:`.measure`). Imports
:mod:`..core` and :mod:`..harness`.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "INNER_COMPILERS": "backend",
        "BackendError": "backend",
        "PiecewiseBackend": "backend",
        "CacheEvent": "cache_events",
        "LogReason": "cache_events",
        "ArtifactSelector": "cache_faults",
        "Attempt": "cache_faults",
        "StartSpec": "cache_faults",
        "attempt": "cache_faults",
        "damage_artifact": "cache_faults",
        "kill_when_written": "cache_faults",
        "start_together": "cache_faults",
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
        "StartOutcome": "start_outcome",
        "expect_outcome": "start_outcome",
    },
)
