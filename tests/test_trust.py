"""Trustworthy verdicts: torch's caches decide reuse, the hash is checked against them, no broken impl is green.

Each key assertion has a negative control: a hash that describes opaque constants by type (the old bug),
a hash that sees something torch ignores, an implementation whose ``LayerName`` is not hoisted, one whose
encoder never wraps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import fixtures_unhoisted_impl
from pytest_layername.checks.roundtrip import RoundTripError, assert_roundtrip
from pytest_layername.compile import graph_hash
from pytest_layername.compile.expectations import CountMismatch, expect_counts
from pytest_layername.compile.session import compile_session
from pytest_layername.core.compat import opaque_support
from pytest_layername.core.implementation import Implementation, ModeProblem, load_implementation, validate_module
from pytest_layername.core.modes import Mode, ModeError
from pytest_layername.harness.models import build_model, run
from pytest_layername.testing.broken import OP_NAME, break_model

NEEDS_HOISTING = pytest.mark.skipif(
    not opaque_support().supported, reason=f"needs a torch with hoisting: {opaque_support().reason}"
)
LAYERS = 6
TESTS_DIR = Path(__file__).parent


class _Unchecked(Implementation):
    """Lets the harness register opaque ops for an unhoisted ``LayerName`` (to show what then happens)."""

    def opaque_unavailable_reason(self) -> str | None:
        return None


def _unhoisted() -> Implementation:
    impl = validate_module(fixtures_unhoisted_impl)
    return _Unchecked(impl.module_name, impl.LayerName, impl.encode_layer_name, impl.resolve_layer_name, impl.module)


def _compile_unhoisted(compiler: str):
    """Compiled and eager outputs of two identical models (no state shared through the KV caches), and the stats."""
    compiled, reference = (build_model("decoder", LAYERS, _unhoisted(), "opaque") for _ in range(2))
    x = reference.example_input()
    with compile_session() as session:
        actual = run(compiled, torch.compile(compiled, backend=session.backend(compiler)), x)
        stats = session.stats
    return actual, run(reference, reference, x), stats


@NEEDS_HOISTING
@pytest.mark.parametrize("compiler", ["eager", "inductor"])
def test_unhoisted_value_type_is_never_a_false_green(compiler: str) -> None:
    """Baked per layer, so every layer's piece is unique; the outputs equal eager; hash and torch agree."""
    actual, expected, stats = _compile_unhoisted(compiler)
    torch.testing.assert_close(actual, expected)
    assert stats.pieces == LAYERS + 1 and stats.unique_pieces >= LAYERS, stats.counts()
    assert stats.hash_disagreements == 0, stats.disagreements()
    if compiler == "inductor":
        assert stats.fx_graph_cache_misses >= LAYERS and stats.inductor_compiles >= LAYERS, stats.counts()
    with pytest.raises(CountMismatch) as caught:
        expect_counts(stats, unique_pieces=3)
    message = str(caught.value)
    assert "unique only because of baked opaque-object constant(s)" in message, message
    assert "layer_name=LayerName('model.layers.1.self_attn')" in message, message
    # the first piece compiled again (under inductor: torch's FX-graph-cache miss) against the one it resembles
    cache = " (FX-graph cache miss)" if compiler == "inductor" else ""  # torch's verdict on the piece
    assert f"piece submod_4 got an artifact of its own{cache}; against submod_2, which" in message, message
    assert (
        "argument layer_name: LayerName('model.layers.1.self_attn')  ->  LayerName('model.layers.2.self_attn')"
        in message
    ), message


def _type_only_opaque(value: object) -> str:
    """The old bug: an opaque constant described by its type only."""
    if graph_hash.is_opaque_constant(value):
        return f"object:{type(value).__qualname__}"
    return ORIGINAL_DESCRIBE(value)


ORIGINAL_DESCRIBE = graph_hash.describe_constant


@NEEDS_HOISTING
def test_control_type_only_hash_gives_wrong_outputs_with_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with the old type-only hash, one artifact serves every layer and outputs are wrong."""
    monkeypatch.setattr(graph_hash, "describe_constant", _type_only_opaque)
    actual, expected, stats = _compile_unhoisted("eager")
    assert stats.unique_pieces == 3  # the false green
    with pytest.raises(AssertionError):
        torch.testing.assert_close(actual, expected)


@NEEDS_HOISTING
def test_control_type_only_hash_is_caught_by_torch_under_inductor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: under inductor torch compiles every layer, so the too-coarse hash disagrees and fails."""
    monkeypatch.setattr(graph_hash, "describe_constant", _type_only_opaque)
    actual, expected, stats = _compile_unhoisted("inductor")
    torch.testing.assert_close(actual, expected)  # torch's cache keyed the constants by value: outputs right
    assert stats.unique_pieces == 3 and stats.fx_graph_cache_misses >= LAYERS
    assert stats.hash_disagreements >= LAYERS - 2, stats.counts()
    with pytest.raises(CountMismatch, match="the hash matches an earlier piece but torch compiled it anew") as caught:
        expect_counts(stats, unique_pieces=3)
    assert "the two render alike: what made torch compile it again is not in the structural hash" in str(caught.value)
    expect_counts(stats, allow_hash_disagreements=True, unique_pieces=3)  # the opt-out is explicit


def test_control_hash_that_sees_too_much_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control, other direction: a hash new for every piece while torch reuses artifacts."""
    describe_input = graph_hash.describe_value
    serial = iter(range(10**6))
    monkeypatch.setattr(graph_hash, "describe_value", lambda value: f"{describe_input(value)}#{next(serial)}")
    impl = load_implementation()
    mode = "opaque" if opaque_support().supported else "string"
    model = build_model("decoder", 4, impl, mode)
    with compile_session() as session:
        run(model, torch.compile(model, backend=session.backend("inductor")), model.example_input())
        stats = session.stats
    assert stats.unique_pieces == stats.pieces == 5
    if mode == "string":  # every piece really is unique: nothing to disagree on
        assert stats.hash_disagreements == 0
        return
    assert stats.fx_graph_cache_hits == 2 and stats.hash_disagreements == 2, stats.counts()
    assert any("the hash is new but torch reused an artifact" in d for d in stats.disagreements())


def test_hash_agrees_with_torch_on_every_reference_model() -> None:
    """The harness's hash against torch's FX-graph cache: unique pieces equal misses, piece by piece."""
    impl = load_implementation()
    for mode in ("opaque", "string") if opaque_support().supported else ("string",):
        for kind in ("decoder", "moe", "hybrid"):
            model = build_model(kind, 4, impl, mode)
            with compile_session() as session:
                run(model, torch.compile(model, backend=session.backend("inductor")), model.example_input())
                stats = session.stats
            assert stats.hash_disagreements == 0, (kind, mode, stats.disagreements())
            assert stats.unique_pieces == stats.fx_graph_cache_misses == stats.inductor_compiles, (kind, mode)
            assert stats.pieces == stats.fx_graph_cache_misses + stats.fx_graph_cache_hits, (kind, mode)
            assert [p.fx_graph_cache for p in stats.piece_records].count("miss") == stats.fx_graph_cache_misses


# -- the implementation's own encoder and switch ------------------------------------------------------


@NEEDS_HOISTING
@NEEDS_HOISTING
def test_encoder_that_never_wraps_is_a_mode_not_exercised() -> None:
    """Its LayerName is the hoisted reference one, but with the switch on it still encodes to str."""
    impl = load_implementation("fixtures_never_wraps_impl")
    assert impl.switch == "fixtures_never_wraps_impl._USE_LAYERNAME"
    problem = impl.mode_problem("opaque")
    assert problem is not None and problem.kind == "not_exercised", problem
    assert "_USE_LAYERNAME = True its _encode_layer_name still gives string mode" in problem.reason, problem
    with pytest.raises(ModeError, match="does not read the switch"):
        assert_roundtrip(impl, "opaque", ["model.layers.0.self_attn"])
    assert impl.mode_problem("string") is None
    assert_roundtrip(impl, "string", ["model.layers.0.self_attn"])  # string mode is what it really does


def test_encoder_that_never_wraps_fails_the_roundtrip_at_the_encode_stage() -> None:
    """Past the up-front check (as an implementation that wraps only sometimes would be), the encode stage fails."""

    class NoModeCheck(Implementation):
        def mode_problem(self, mode: Mode) -> ModeProblem | None:
            return None

    never_wraps = load_implementation("fixtures_never_wraps_impl")
    impl = NoModeCheck(
        never_wraps.module_name,
        never_wraps.LayerName,
        never_wraps.encode_layer_name,
        never_wraps.resolve_layer_name,
        never_wraps.module,
    )
    with pytest.raises(RoundTripError) as caught:
        assert_roundtrip(impl, "opaque", ["model.layers.0.self_attn"])
    assert "[encode] 'model.layers.0.self_attn': got str 'model.layers.0.self_attn', expected LayerName" in str(
        caught.value
    )
    assert_roundtrip(impl, "string", ["model.layers.0.self_attn"])  # string mode is what it really does


def test_reference_switch_is_what_the_roundtrip_exercises() -> None:
    impl = load_implementation()
    assert impl.switch == "pytest_layername.core.reference._USE_LAYERNAME"
    for mode in ("opaque", "string") if opaque_support().supported else ("string",):
        assert_roundtrip(impl, mode, ["a.b", "ü"])
        with impl.use_mode(mode):
            assert impl.native_mode() == mode


@NEEDS_HOISTING
def test_implementation_without_switch_exercises_its_native_mode_only() -> None:
    impl = load_implementation("fixtures_no_switch_impl")
    assert impl.switch is None and impl.native_mode() == "opaque"
    problem = impl.mode_problem("string")
    assert problem is not None and problem.kind == "not_exercised" and "string mode is not exercised" in problem.reason
    with pytest.raises(Exception, match="string mode is not exercised"):
        assert_roundtrip(impl, "string", ["a"])
    assert_roundtrip(impl, "opaque", ["a"])


# -- the plugin: no skip hides a broken implementation -------------------------------------------------

SUITE_SUBSET = [
    "--pyargs",
    "pytest_layername.suite",
    "-k",
    "test_schema_takes_opaque_or_str or test_unique_pieces or test_registered_hoisted_at_import",
]


@NEEDS_HOISTING
@pytest.mark.parametrize("mode", ["auto", "both"])
def test_suite_against_unhoisted_implementation_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        *SUITE_SUBSET, f"--layername-mode={mode}", "--layername-impl=fixtures_unhoisted_impl", "-p", "no:xdist"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*opaque-mode tests FAIL: fixtures_unhoisted_impl.LayerName is not registered as a hoisted*",
            "*layername: fixtures_unhoisted_impl.LayerName is not registered as a hoisted opaque type*",
        ]
    )
    outcomes = result.parseoutcomes()
    assert outcomes["errors"] == 8, outcomes  # 1 schema + 6 unique-pieces + 1 registered-at-import (opaque only)
    # the opaque-only test's string case is a deselected mode (a skip), not a hidden failure
    assert outcomes.get("skipped", 0) == (1 if mode == "both" else 0), outcomes
    assert outcomes.get("passed", 0) == (7 if mode == "both" else 0), outcomes


@NEEDS_HOISTING
def test_unhoisted_opt_out_skips_and_says_so(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        *SUITE_SUBSET,
        "--layername-mode=both",
        "--layername-impl=fixtures_unhoisted_impl",
        "--layername-allow-unhoisted",
        "-p",
        "no:xdist",
        "--layername-report=r.json",
    )
    result.assert_outcomes(passed=7, skipped=9)
    result.stdout.fnmatch_lines(["*opaque-mode tests skip: fixtures_unhoisted_impl.LayerName is not registered*"])
    assert json.loads((pytester.path / "r.json").read_text())["run"]["allow_unhoisted"] is True


@NEEDS_HOISTING
def test_a_string_only_test_is_not_failed_by_an_unhoisted_implementation(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is for tests that need opaque mode; a test restricted to string mode skips its opaque case."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.layername(modes=["string"])
        def test_string_only(layername_mode):
            assert layername_mode == "string"
        """
    )
    result = pytester.runpytest_subprocess(
        "--layername-mode=both", "--layername-impl=fixtures_unhoisted_impl", "-p", "no:xdist"
    )
    result.assert_outcomes(passed=1, skipped=1)


@pytest.mark.layername(modes=["opaque"])
def test_broken_op_is_caught(layername_mode, layername_impl, layername_device, compile_counter):
    """One op still taking ``str`` in an opaque model: the count assertion fails and names the op and string."""
    model = break_model(build_model("decoder", 16, layername_impl, layername_mode, device=layername_device))
    x = model.example_input()
    torch.testing.assert_close(run(model, compile_counter.compile(model, compiler="eager"), x), run(model, model, x))
    with pytest.raises(CountMismatch) as caught:
        compile_counter.expect(unique_pieces=3)
    message = str(caught.value)
    assert "unique_pieces" in message and "17" in message
    assert OP_NAME in message and "'model.layers.3.mlp'" in message
