"""One start-up of a real vLLM engine on the CPU: a tiny model of one family (families.py), in this process.

:func:`start_engine` is a target for :func:`pytest_layername.compile.process_start.start_process`: it runs
in a fresh process inside ``observe_compile(["vllm"])`` (vLLM's ``compilation_counter`` beside torch's
counters), with :data:`ENGINE_ENV` and ``VLLM_USE_LAYERNAME`` / ``VLLM_CACHE_ROOT`` set by the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_layername.compile.cache_faults import INDUCTOR_LAYOUT

#: The engine in this process (its counters readable), a small KV cache, nothing fetched from the Hub.
ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
#: The start target (this folder on the child's PYTHONPATH: :func:`child_env`) and VLLM_USE_LAYERNAME per mode.
TARGET = "vllm_start:start_engine"
MODES = {"LayerName": "1", "str": "0"}
HERE = Path(__file__).resolve().parent
#: How long a start may run before it counts as hung (the slowest cold start here took ~4 min on a loaded machine).
START_TIMEOUT = 900
#: The split of the compiled model: vLLM's default, or the per-layer ops (KV-cache update, MoE, Mamba) inside
#: the compiled pieces (the family's attention op alone as ``splitting_ops``; see families.Family.inside).
SPLITS = ("default", "inside")
PROMPT = [1, 2, 3, 4, 5, 6, 7, 8]
MAX_TOKENS = 2
#: Top log-probabilities the engine returns per generated token (each is compared with transformers').
TOP_LOGPROBS = 5
#: vLLM's compile cache below ``VLLM_CACHE_ROOT``, by kind (for :mod:`pytest_layername.compile.cache_faults`):
#: the compiled model vLLM saves once per start (``torch_aot_compile/<hash>/rank_0_0/model``: every distinct
#: piece's inductor artifact, deduplicated, which a warm start loads) and torch's entries in the inductor
#: cache beside it, which only a start that compiles reads.
CACHE_LAYOUT = {
    "vllm_model": "torch_compile_cache/torch_aot_compile/*/rank_*/model",
    **INDUCTOR_LAYOUT,
}


def child_env() -> dict[str, str]:
    """The engine's environment for a fresh process that imports this folder's modules."""
    return {**ENGINE_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}


def expect_one_artifact_per_distinct_piece(cold: Any) -> None:
    """A cold start (a :class:`~pytest_layername.compile.process_start.ProcessStart`) saved one artifact per
    structurally distinct compiled piece of its split."""
    __tracebackhide__ = True
    seen = cold.result["split_seen"]
    assert seen is not None, f"{cold.label}: the cold start split no graph"
    cold.expect(artifacts_saved=seen["distinct_compiled_pieces"])


def piece_summary(graph: Any) -> dict[str, Any]:
    """One piece of the split: the ops in it that take a ``layer_name`` (by their schema, in order), what
    each receives as its layer name (a baked ``str`` constant, or a graph input), and the piece's structural
    digest (:func:`pytest_layername.compile.graph_hash.graph_signature`: equal digests, one artifact)."""
    import torch

    from pytest_layername.compile.graph_hash import graph_signature

    ops, names = [], []
    for node in graph.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
            continue
        overload = target.default if isinstance(target, torch._ops.OpOverloadPacket) else target
        arguments = [argument.name for argument in overload._schema.arguments]
        if "layer_name" not in arguments:
            continue
        ops.append(overload._schema.name)
        index = arguments.index("layer_name")
        given = node.kwargs["layer_name"] if "layer_name" in node.kwargs else node.args[index]
        names.append(repr(given) if isinstance(given, str) else "graph input")
    return {"layer_name_ops": ops, "layer_names": names, "digest": graph_signature(graph).digest}


@contextlib.contextmanager
def recording_split() -> Iterator[list[dict[str, Any]]]:
    """Watch vLLM split the model (``vllm.compilation.backends.split_graph``, wrapped read-only while the
    engine starts): per piece, whether vLLM compiles it or runs it eagerly (a splitting op), and the ops in
    it that take a layer name. A warm start loads its pieces and splits nothing."""
    import vllm.compilation.backends as backends

    original = backends.split_graph
    pieces: list[dict[str, Any]] = []

    def split_graph(graph: Any, splitting_ops: list[str]) -> Any:
        split_gm, items = original(graph, splitting_ops)
        for item in items:
            pieces.append({"compiled": not item.is_splitting_graph, **piece_summary(item.graph)})
        return split_gm, items

    backends.split_graph = split_graph
    try:
        yield pieces
    finally:
        backends.split_graph = original


def split_summary(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the split: compiled pieces, eager (splitting) pieces, where the layer-name ops are, what the
    compiled pieces receive as layer names (constant -> pieces), and how many distinct pieces there are."""
    compiled = [p for p in pieces if p["compiled"]]
    eager = [p for p in pieces if not p["compiled"]]
    constants: Counter[str] = Counter(name for p in compiled for name in set(p["layer_names"]))
    return {
        "distinct_compiled_pieces": len({p["digest"] for p in compiled}),
        "compiled_layer_names": dict(sorted(constants.items())),
        "compiled_pieces": len(compiled),
        "eager_pieces": len(eager),
        "compiled_pieces_with_layer_name_ops": sum(bool(p["layer_name_ops"]) for p in compiled),
        "layer_name_ops_compiled": sorted({op for p in compiled for op in p["layer_name_ops"]}),
        "layer_name_ops_eager": sorted({op for p in eager for op in p["layer_name_ops"]}),
    }


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _top_logprobs(positions: Any) -> list[dict[str, float]]:
    return [{str(token): float(entry.logprob) for token, entry in (position or {}).items()} for position in positions]


def start_engine(
    session: Any,
    *,
    model: str,
    split: str,
    inside: list[str] | None = None,
    optional_fixes: list[str] | None = None,
    tamper: str | None = None,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Start the engine on ``model`` with ``split`` (:data:`SPLITS`; ``inside``: the splitting ops of the
    "inside" split), generate greedily, and say what it ran with, what it produced and which layer-name ops
    it called. ``optional_fixes``: names in cpu_piecewise.OPTIONAL_FIXES (the MoE custom op as on GPU, the MoE
    call order as on older torch); ``tamper``: a negative control's lying resolver (:data:`op_calls.TAMPERS`);
    ``raise_errors``: vLLM's error fails the start (a loud error) instead of being its result."""
    import op_calls

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    with op_calls.recording(tamper) as calls:  # before vLLM registers its ops
        import cpu_piecewise
        import vllm
        import vllm.utils.torch_utils as torch_utils
        from vllm import LLM, SamplingParams

        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        extra, model_fixes = cpu_piecewise.engine_args(config)
        splitting_ops = None if split == "default" else list(inside or [])
        with cpu_piecewise.applied(optional_fixes or ()) as fixes, recording_split() as pieces:
            try:
                llm = LLM(
                    model=model, load_format="auto", skip_tokenizer_init=True, max_model_len=128, dtype="float32",
                    compilation_config=cpu_piecewise.compilation_config(splitting_ops), **extra,
                )  # fmt: skip
                sampling = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, detokenize=False,
                                          logprobs=TOP_LOGPROBS, prompt_logprobs=1)  # fmt: skip
                outputs = llm.generate([{"prompt_token_ids": PROMPT}], sampling)
            except Exception as error:  # the family cannot run here: vLLM's own error is the result
                if raise_errors:
                    raise
                return {"architecture": config["architectures"][0], "split": split,
                        "layers": config["num_hidden_layers"], "error": _first_line(error),
                        "fixes": [fix.name for fix in (*fixes, *model_fixes)]}  # fmt: skip
    compilation = llm.llm_engine.vllm_config.compilation_config
    output = outputs[0]
    return {
        "vllm": vllm.__version__,
        "architecture": config["architectures"][0],
        "split": split,
        "layers": config["num_hidden_layers"],
        "use_layername": bool(torch_utils._USE_LAYERNAME),
        "env_use_layername": os.environ.get("VLLM_USE_LAYERNAME"),
        "mode": int(compilation.mode),
        "splitting_ops": list(compilation.splitting_ops or []),
        "tokens": list(output.outputs[0].token_ids),
        "logprobs": _top_logprobs(output.outputs[0].logprobs),
        "prompt_logprobs": _top_logprobs(output.prompt_logprobs[1:]),
        "fixes": [fix.name for fix in (*fixes, *model_fixes)],
        "split_seen": split_summary(pieces) if pieces else None,
        "op_calls": calls.summary(),
    }
