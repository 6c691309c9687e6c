"""Negative controls of the shipped suite: each implementation in ``broken_impls`` fails it, and the failure says where.

Each case runs ``pytest --pyargs pytest_layername.suite --layername-mode=both --layername-impl=broken_impls.<bug>``
in a subprocess, on the suite's tests that catch that bug (the whole suite fails them too; the selection keeps the
test command short), and checks the exit status and the line a user reads: the layer, the name or the stage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pytest_layername.core.compat import opaque_support

TESTS_DIR = Path(__file__).parent
NEEDS_HOISTING = pytest.mark.skipif(
    not opaque_support().supported, reason=f"needs a torch with hoisting: {opaque_support().reason}"
)

MODES = ("opaque", "string")
KINDS = ("decoder", "moe", "hybrid")

#: bug -> (the suite's tests that catch it, an exit status, lines the output must hold in order)
CASES: dict[str, tuple[str, pytest.ExitCode, list[str]]] = {
    "moe_experts_to_layer_zero": (
        "test_unique_pieces and 4-moe",
        pytest.ExitCode.TESTS_FAILED,
        [
            "*eager output of the 4-layer moe model*",
            "*first layer whose eager output is wrong: model.layers.1.mlp.experts*",
        ],
    ),
    "two_digit_index": (
        "test_unique_pieces and 12-decoder",
        pytest.ExitCode.TESTS_FAILED,
        ["*first layer whose eager output is wrong: model.layers.10.self_attn*"],
    ),
    "name_blind_identity": (
        "test_distinct_names_stay_distinct",
        pytest.ExitCode.TESTS_FAILED,
        ["*encode to equal values*"],
    ),
    "process_local_pickle": (
        "test_pickles_load_in_another_process",
        pytest.ExitCode.TESTS_FAILED,
        ["*unpickling raised IndexError*"],
    ),
    "int_switch": (
        "test_schema_takes_opaque_or_str",
        pytest.ExitCode.USAGE_ERROR,
        ["*module 'broken_impls.int_switch' is not a usable*_USE_LAYERNAME must be a bool*got int 1*"],
    ),
    "no_fallback_on_old_torch": (
        "test_falls_back_to_strings_on_torch_without_hoisting",
        pytest.ExitCode.TESTS_FAILED,
        ["*importing or using broken_impls.no_fallback_on_old_torch there failed*"],
    ),
    "off_by_one_layer": (  # every model, eager and compiled(eager); the inductor case is the slow test below
        "test_unique_pieces and 4- or test_fusion_model_with_two_digit_names",
        pytest.ExitCode.TESTS_FAILED,
        [
            *(f"*FAILED *test_fusion_model_with_two_digit_names[[]{mode}]*" for mode in MODES),
            *(f"*FAILED *test_unique_pieces[[]{mode}-4-{kind}]*" for mode in MODES for kind in KINDS),
        ],
    ),
}


def _run_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bug: str, select: str) -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    return pytester.runpytest_subprocess(
        "--pyargs",
        "pytest_layername.suite",
        "--layername-mode=both",
        f"--layername-impl=broken_impls.{bug}",
        "-k",
        select,
        "-p",
        "no:xdist",
        "-rf",
    )


@pytest.mark.parametrize("bug", sorted(CASES))
def test_the_suite_fails_a_broken_implementation(pytester, monkeypatch, bug):
    select, status, lines = CASES[bug]
    result = _run_suite(pytester, monkeypatch, bug, select)
    assert result.ret == status, result.stdout.str()
    pytest.LineMatcher(result.outlines + result.errlines).fnmatch_lines(lines)


@NEEDS_HOISTING
def test_the_suite_fails_a_lazily_registered_type(pytester, monkeypatch):
    """Registered hoisted only by its first encode: opaque mode fails and says the type was registered too late."""
    result = _run_suite(pytester, monkeypatch, "lazy_registration", "test_registered_hoisted_at_import")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*broken_impls.lazy_registration.LayerName*not registered*"])


@NEEDS_HOISTING
def test_a_switch_the_encoder_does_not_read_is_a_usage_error(pytester, monkeypatch):
    """With the switch off the encoder still wraps: string mode would silently run as opaque."""
    result = _run_suite(pytester, monkeypatch, "deaf_switch", "test_schema_takes_opaque_or_str")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(["*_USE_LAYERNAME = False its _encode_layer_name still gives opaque mode*"])


@pytest.mark.layername_slow  # cold inductor compiles of three models in two modes: about a minute on 2 cores
def test_off_by_one_fails_every_model_under_inductor(pytester, monkeypatch):
    result = _run_suite(pytester, monkeypatch, "off_by_one_layer", "test_inductor_matches_ground_truth")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = set(re.findall(r"FAILED \S+::test_inductor_matches_ground_truth\[(\w+-\w+)\]", result.stdout.str()))
    assert failed == {f"{mode}-{kind}" for mode in MODES for kind in ("moe", "hybrid")}, failed
