"""The ground truth is independent of the implementation and tells every layer apart.

It never calls the implementation's encoder or resolver; an op sent to any other layer of the same kind
changes the output, in every model (decoder, MoE, hybrid, fusion), eagerly and under inductor; the
failure names the layer; a run that alone went wrong is told apart from an implementation that is wrong.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest
import torch

from pytest_layername.core import reference
from pytest_layername.core.implementation import Implementation
from pytest_layername.fusion import build_fusion_model
from pytest_layername.fusion.testing import fast_cpu_inductor
from pytest_layername.harness.ground_truth import GroundTruthError, assert_ground_truth, ground_truth
from pytest_layername.harness.models import ReferenceModel, build_model, run

CALLS: Counter[str] = Counter()
#: plain name -> the name the misrouting resolver returns instead
MISROUTE: dict[str, str] = {}


def _encode(name: str) -> object:
    CALLS["encode"] += 1
    return reference._encode_layer_name(name)


def _resolve(layer_name: object) -> str:
    CALLS["resolve"] += 1
    name = reference._resolve_layer_name(layer_name)
    return MISROUTE.get(name, name)


#: the reference, counting its calls and sending the names in MISROUTE to another layer
MISROUTING = Implementation("tests.misrouting", reference.LayerName, _encode, _resolve, reference)


@pytest.fixture
def misroute() -> Iterator[dict[str, str]]:
    CALLS.clear()
    MISROUTE.clear()
    yield MISROUTE
    MISROUTE.clear()


def _model(kind: str, layers: int, mode: str = "string") -> ReferenceModel:
    if kind == "fusion":
        return build_fusion_model(layers, MISROUTING, mode, rope_layers=None)
    return build_model(kind, layers, MISROUTING, mode)


def _same_kind_elsewhere(name: str, names: list[str]) -> str:
    """Another layer's name with the same suffix (the next one, wrapping round)."""
    suffix = re.sub(r"^model\.layers\.\d+\.", "", name)
    same = [n for n in names if n.endswith("." + suffix)]
    return same[(same.index(name) + 1) % len(same)]


@pytest.mark.parametrize("mode", ["opaque", "string"])
def test_ground_truth_never_calls_the_implementation(misroute, mode):
    model = _model("moe", 3, mode)
    x = model.example_input()
    CALLS.clear()  # building the model asks the encoder which mode it gives
    expected, _ = ground_truth(model, x)
    assert CALLS == {}, CALLS
    torch.testing.assert_close(run(model, model, x), expected, rtol=0, atol=0)  # the same computation, exactly
    assert CALLS["encode"] and CALLS["resolve"]  # positive control: the counters see the implementation's calls


@pytest.mark.parametrize("kind", ["decoder", "moe", "hybrid", "fusion"])
def test_every_layer_sent_elsewhere_is_caught_and_named(misroute, kind):
    """For each layer-name op of a 12-layer model in turn: send it to another layer of its kind; the eager output
    differs from the ground truth and the failure names that layer."""
    model = _model(kind, 12)
    names = list(model.named_layers())
    x = model.example_input()
    for name in names:
        misroute.clear()
        misroute[name] = _same_kind_elsewhere(name, names)
        with pytest.raises(GroundTruthError) as caught:
            assert_ground_truth(model, run(model, model, x), x, stage="eager")
        assert f"first layer whose eager output is wrong: {name}," in str(caught.value), (name, str(caught.value))


@pytest.mark.parametrize(
    "kind",
    # hybrid covers attention and Mamba; the others cost a cold inductor compile each (~15 s on 2 cores)
    [*(pytest.param(kind, marks=pytest.mark.layername_slow) for kind in ("decoder", "moe", "fusion")), "hybrid"],
)
def test_a_layer_sent_elsewhere_is_caught_under_inductor(misroute, kind, compile_counter):
    model = _model(kind, 4)
    x = model.example_input()
    names = list(model.named_layers())
    misroute[names[-1]] = _same_kind_elsewhere(names[-1], names)
    with fast_cpu_inductor():
        actual = run(model, compile_counter.compile(model, compiler="inductor"), x)
    with pytest.raises(GroundTruthError, match=r"compiled\(inductor\) output .* differs from the ground truth"):
        assert_ground_truth(model, actual, x, stage="compiled(inductor)")


def test_the_diagnosis_names_the_state_a_run_wrote_to_the_wrong_layer(misroute):
    model = _model("decoder", 12)
    x = model.example_input()
    misroute["model.layers.10.self_attn"] = "model.layers.1.self_attn"
    with pytest.raises(GroundTruthError) as caught:
        assert_ground_truth(model, run(model, model, x), x, stage="eager")
    message = str(caught.value)
    assert "first layer whose eager output is wrong: model.layers.10.self_attn," in message, message
    assert "state the judged run wrote that differs: model.layers.1.self_attn kv_cache" in message, message


def test_a_run_that_alone_went_wrong_is_told_apart(misroute):
    """The implementation is right, the judged output is not: the diagnosis says the eager run matches."""
    model = _model("hybrid", 4)
    x = model.example_input()
    wrong = run(model, model, x) + 1e-3
    with pytest.raises(GroundTruthError, match="none: the eager run matches the ground truth, only the judged run"):
        assert_ground_truth(model, wrong, x, stage="compiled(inductor)")


def test_a_model_without_frozen_state_is_a_clear_error():
    model = _model("decoder", 2)
    model.ground_truth_state = {}
    with pytest.raises(ValueError, match="no frozen ground truth"):
        ground_truth(model, model.example_input())
