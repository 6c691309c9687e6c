"""The expected output of a reference-model start, computed in this process, never in the start's.

:func:`reference_truth` builds the same deterministic reference model the start's target built and computes
its ground truth (:mod:`..harness.ground_truth`: the layers' own state keyed by plain name, no encoder, no
resolver, no compile, no cache); the check it returns compares a start's ``"output"``
(``start_reference(..., return_output=True)``) with it. Whatever a cache served the start, it cannot bend this value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.implementation import REFERENCE_IMPL, load_implementation
from ..harness.ground_truth import ground_truth
from ..harness.models import build_model

#: as :func:`~..harness.ground_truth.assert_ground_truth`
ATOL, RTOL = 1e-5, 1.3e-6


def reference_truth(
    *, model: str, layers: int, mode: str, impl: str = REFERENCE_IMPL, device: str = "cpu"
) -> Callable[[Any], str | None]:
    """A check of a start's output against the ground truth: None when it matches, else what differs."""
    net = build_model(model, layers, load_implementation(impl), mode, device=device)  # type: ignore[arg-type]
    expected, _ = ground_truth(net, net.example_input())

    def check(start: Any) -> str | None:
        output = (start.result or {}).get("output") if isinstance(start.result, dict) else None
        if output is None:
            return f"{start.label}: the start returned no output to judge (start_reference(return_output=True))"
        actual = torch.tensor(output, dtype=expected.dtype, device=expected.device)
        if actual.shape == expected.shape and torch.allclose(actual, expected, atol=ATOL, rtol=RTOL):
            return None
        if actual.shape != expected.shape:
            return f"output shape {tuple(actual.shape)}, ground truth {tuple(expected.shape)}"
        wrong = int((~torch.isclose(actual, expected, atol=ATOL, rtol=RTOL)).sum())
        diff = float((actual - expected).abs().max())
        return (
            f"output differs from the ground truth of the {layers}-layer {model} ({mode} mode) by {diff:.3g} in "
            f"{wrong} of {expected.numel()} values: a layer's op did not get its own layer's state"
        )

    return check
