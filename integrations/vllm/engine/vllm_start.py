"""One start-up of a real vLLM engine on the CPU: a tiny Llama from a config only, in this process.

:func:`start_engine` is a target for :func:`pytest_layername.compile.process_start.start_process`: it runs
in a fresh process inside ``observe_compile(["vllm"])`` (vLLM's ``compilation_counter`` beside torch's
counters), with :data:`ENGINE_ENV` and ``VLLM_USE_LAYERNAME`` / ``VLLM_CACHE_ROOT`` set by the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The engine in this process (its counters readable), a small KV cache, nothing fetched from the Hub.
ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
#: vLLM's default split (None), and the KV-cache update inside the compiled pieces.
SPLITS: dict[str, list[str] | None] = {
    "default": None,
    "kv-inside": ["vllm::unified_attention_with_output"],
}
PROMPT = [1, 2, 3, 4, 5, 6, 7, 8]
MAX_TOKENS = 2


def llama_config(layers: int) -> dict[str, Any]:
    """A tiny Llama: hidden 128, 4 heads, 2 KV heads, intermediate 256, vocabulary 512, float32."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": layers,
        "vocab_size": 512,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def write_model(folder: Path, layers: int) -> Path:
    """The model directory: ``config.json`` only (vLLM's dummy loader makes the weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(llama_config(layers), indent=1), encoding="utf-8")
    return folder


def layer_name_ops(graph: Any) -> list[str]:
    """The ops in an FX graph that take a ``layer_name`` argument (by their schema), in order."""
    import torch

    found = []
    for node in graph.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
            continue
        overload = target.default if isinstance(target, torch._ops.OpOverloadPacket) else target
        if any(argument.name == "layer_name" for argument in overload._schema.arguments):
            found.append(overload._schema.name)
    return found


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
            pieces.append({"compiled": not item.is_splitting_graph, "layer_name_ops": layer_name_ops(item.graph)})
        return split_gm, items

    backends.split_graph = split_graph
    try:
        yield pieces
    finally:
        backends.split_graph = original


def split_summary(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the split: compiled pieces, eager (splitting) pieces, and where the layer-name ops are."""
    compiled = [p for p in pieces if p["compiled"]]
    eager = [p for p in pieces if not p["compiled"]]
    return {
        "compiled_pieces": len(compiled),
        "eager_pieces": len(eager),
        "compiled_pieces_with_layer_name_ops": sum(bool(p["layer_name_ops"]) for p in compiled),
        "layer_name_ops_compiled": sorted({op for p in compiled for op in p["layer_name_ops"]}),
        "layer_name_ops_eager": sorted({op for p in eager for op in p["layer_name_ops"]}),
    }


def start_engine(session: Any, *, model: str, split: str) -> dict[str, Any]:
    """Start the engine on ``model`` with ``split`` (:data:`SPLITS`), generate, and say what it ran with."""
    import cpu_piecewise
    import vllm
    import vllm.utils.torch_utils as torch_utils
    from vllm import LLM, SamplingParams

    with cpu_piecewise.applied() as fixes, recording_split() as pieces:
        llm = LLM(
            model=model,
            load_format="dummy",
            skip_tokenizer_init=True,
            max_model_len=128,
            dtype="float32",
            compilation_config=cpu_piecewise.compilation_config(SPLITS[split]),
        )
        outputs = llm.generate([{"prompt_token_ids": PROMPT}], SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0,
                                                                           detokenize=False))  # fmt: skip
    compilation = llm.llm_engine.vllm_config.compilation_config
    return {
        "vllm": vllm.__version__,
        "split": split,
        "layers": json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"],
        "use_layername": bool(torch_utils._USE_LAYERNAME),
        "env_use_layername": os.environ.get("VLLM_USE_LAYERNAME"),
        "mode": int(compilation.mode),
        "splitting_ops": list(compilation.splitting_ops or []),
        "tokens": [list(o.token_ids) for o in outputs[0].outputs],
        "fixes": [fix.name for fix in fixes],
        "split_seen": split_summary(pieces) if pieces else None,
    }
