"""What compiling costs, as torch reports it.

Owns the piecewise backend (:mod:`.backend`), structural graph hashing (:mod:`.graph_hash`), compile
statistics (:mod:`.stats`), Dynamo's graph breaks (:mod:`.graph_breaks`), sessions that read them from
torch and observe compiles they do not drive (:mod:`.session`), engine counter adapters (:mod:`.engines`),
start-ups in fresh processes on a cache directory (:mod:`.process_start`), count expectations and why they
failed (:mod:`.expectations`, :mod:`.piece_diff`), torch's structured trace of a block of code
(:mod:`.trace_file`) and measurement of the reference models
(:mod:`.measure`). Imports :mod:`..core` and :mod:`..harness`.
"""
