"""The ground truth: what a reference model must output when every layer's op finds its own layer.

It is computed from the model's frozen copy of each layer's state, keyed by the plain layer name
(:meth:`~.models.ReferenceModel.freeze_ground_truth`), by the same layer computations the ops use
(:mod:`.layer_math`), on a path that never calls the implementation's ``_encode_layer_name`` or
``_resolve_layer_name``: each layer passes its plain name and the ops look it up in that copy. An
implementation cannot bend the expected value; comparing any run (eager or compiled) with it shows
whether every layer found its own name. A mismatch names the layers that went wrong.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import torch

from .layer_math import attend, mix_experts, scan_state, write_kv_cache
from .models import ReferenceModel, run


class GroundTruthError(AssertionError):
    """A run's output differs from the ground truth: some layer did not get its own state."""


class PlainNameOps:
    """The reference ops' computations on a table of layer state keyed by the plain name (no encoder, no resolver)."""

    def __init__(self, table: Mapping[str, SimpleNamespace]) -> None:
        self.table = table

    def _layer(self, name: str) -> SimpleNamespace:
        return self.table[name]

    def kv_cache_update(self, key: torch.Tensor, value: torch.Tensor, name: str) -> torch.Tensor:
        write_kv_cache(self._layer(name), key, value)
        return key.new_empty((0,))

    def attention_with_output(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        name: str,
        kv_cache_dummy_dep: torch.Tensor,
    ) -> None:
        output.copy_(attend(self._layer(name), query))

    def moe_forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor, name: str) -> torch.Tensor:
        return mix_experts(self._layer(name), hidden_states, router_logits)

    def mamba_mixer(self, projected_states: torch.Tensor, output: torch.Tensor, name: str) -> None:
        scan_state(self._layer(name), projected_states, output)


@contextlib.contextmanager
def _plain_names(model: ReferenceModel, table: Mapping[str, SimpleNamespace]) -> Iterator[None]:
    """Inside the block every layer passes its plain name to :class:`PlainNameOps` over ``table``."""
    layers = list(model.named_layers().values())
    saved = [(layer.ops, layer.encode) for layer in layers]
    ops = PlainNameOps(table)
    try:
        for layer in layers:
            layer.ops, layer.encode = ops, str
        yield
    finally:
        for layer, (layer_ops, encode) in zip(layers, saved, strict=True):
            layer.ops, layer.encode = layer_ops, encode


def ground_truth(model: ReferenceModel, *args: Any) -> tuple[torch.Tensor, dict[str, SimpleNamespace]]:
    """The expected output for ``args`` and each layer's state afterwards, from a fresh copy of the frozen state."""
    if not model.ground_truth_state:
        raise ValueError("the model has no frozen ground truth (build it with build_model or finish_model)")
    table = copy.deepcopy(model.ground_truth_state)
    with _plain_names(model, table), torch.no_grad():
        return model(*args), table


def _outputs_in_order(model: ReferenceModel, call: Callable[[], Any]) -> list[tuple[str, torch.Tensor]]:
    """``(name, output)`` of every layer-name module and every block, in the order ``call()`` (eager) ran them."""
    outputs: list[tuple[str, torch.Tensor]] = []
    named = [(layer.prefix, layer) for layer in model.named_layers().values()]
    named += [(f"model.layers.{index}", block) for index, block in enumerate(model.layers)]
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.append((name, out.detach())))
        for name, module in named
    ]
    try:
        call()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def _differs(actual: torch.Tensor, expected: torch.Tensor, tolerance: Mapping[str, float]) -> float | None:
    """The largest absolute difference when ``actual`` is not close to ``expected``, else None."""
    if actual.shape != expected.shape:
        return float("inf")
    if torch.allclose(actual, expected, **tolerance):
        return None
    return float((actual - expected).abs().max())


def _diagnosis(model: ReferenceModel, args: tuple[Any, ...], tolerance: Mapping[str, float]) -> list[str]:
    """Which layers went wrong: the first layer whose eager output diverges, and the state the judged run wrote."""
    truth: list[tuple[torch.Tensor, dict[str, SimpleNamespace]]] = []
    expected = _outputs_in_order(model, lambda: truth.append(ground_truth(model, *args)))
    expected_state = truth[0][1]
    wrote = []
    for name, layer in model.named_layers().items():  # still the state of the run being judged
        for attribute in layer.WRITTEN:
            if diff := _differs(getattr(layer, attribute), getattr(expected_state[name], attribute), tolerance):
                wrote.append(f"{name} {attribute} ({diff:.3g})")
    actual = _outputs_in_order(model, lambda: run(model, model, *args))
    first = next(
        (
            f"{name}, off by {diff:.3g}"
            for (name, a), (_, e) in zip(actual, expected, strict=True)
            if (diff := _differs(a, e, tolerance)) is not None
        ),
        "none: the eager run matches the ground truth, only the judged run went wrong",
    )
    lines = [f"first layer whose eager output is wrong: {first}"]
    if wrote:
        lines.append(
            f"state the judged run wrote that differs: {', '.join(wrote[:4])}{' ...' if len(wrote) > 4 else ''}"
        )
    return lines


def assert_ground_truth(
    model: ReferenceModel, actual: torch.Tensor, *args: Any, stage: str, atol: float = 1e-5, rtol: float = 1.3e-6
) -> None:
    """Raise :class:`GroundTruthError` unless ``actual`` (the output of a run on ``args``) is the ground truth.

    ``stage`` says which run it was (``eager``, ``compiled(inductor)``, ...); call right after that run, so the
    layers' written state is still that run's. The message names the layers that went wrong.
    """
    __tracebackhide__ = True
    tolerance = {"atol": atol, "rtol": rtol}
    expected, _ = ground_truth(model, *args)
    if (diff := _differs(actual, expected, tolerance)) is None:
        return
    details = "\n  ".join(_diagnosis(model, args, tolerance))
    raise GroundTruthError(
        f"{stage} output of the {len(model.layers)}-layer {model.kind} model ({model.impl.module_name}, "
        f"{model.mode} mode) differs from the ground truth by {diff:.3g} (atol={atol}, rtol={rtol}): some layer's "
        f"op did not get its own layer's state\n  {details}"
    )
