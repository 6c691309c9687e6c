"""Layer-name bugs seen in the field that an implementation's ``LayerName`` meets inside torch, per torch version.

=====================================  ==========================================  ===============================
bug                                    torch versions                              harness answer
=====================================  ==========================================  ===============================
``needs_fixed_stride_order`` op with   2.11 (inductor's constrain_to_fake_tensor   compile such an op under
an opaque argument                     called ``.stride()`` on it, pytorch#175973) inductor in every cell
hoisted ``LayerName`` built with       every torch with hoisting so far            known bug ``hoisted-kwargs-nyi``:
keyword arguments                      ("NYI: hoisted opaque objects that ...")    engines build names positionally
=====================================  ==========================================  ===============================

The harness's own field checks (``__fx_repr__`` contract, opaque defaults, impure fakes, registering twice,
torch without ``hoist=``, deprecations) are tested on the bundled reference in the project's ``tests/``;
against the implementation under test, ``test_roundtrip.py`` covers its fresh-process import, deprecations
and fallback on a torch without hoisting.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from pytest_layername.checks.field_checks import define_op
from pytest_layername.core.implementation import Implementation
from pytest_layername.core.modes import Mode

NAMES = ["model.layers.0.self_attn", "model.layers.1.self_attn", "model.layers.2.self_attn"]


_OPS: dict[tuple[str, str], object] = {}


_received: list[str] = []


def _layer_name_type(impl: Implementation, mode: Mode) -> type:
    return impl.layer_name_type(mode, "register the field-bug ops")


# -- needs_fixed_stride_order -----------------------------------------------------------------------


def _strided_op(impl: Implementation, mode: Mode):
    key = ("strided", mode)
    if key not in _OPS:
        resolve = impl.resolve

        def strided_scale(x: torch.Tensor, layer_name: object) -> torch.Tensor:
            _received.append(resolve(layer_name))
            return x * 2

        strided_scale.__annotations__["layer_name"] = _layer_name_type(impl, mode)
        _OPS[key] = define_op(
            f"layername_fieldbugs::strided_scale_{mode}",
            strided_scale,
            fake=lambda x, layer_name: torch.empty_like(x),
            tags=(torch.Tag.needs_fixed_stride_order,),
        )
    return _OPS[key]


def test_fixed_stride_order_op_with_layer_name_compiles_under_inductor(
    layername_impl, layername_mode, layername_device, compile_counter
):
    """torch 2.11: inductor called ``.stride()`` on the opaque argument of a ``needs_fixed_stride_order`` op."""
    op = _strided_op(layername_impl, layername_mode)

    def layers(x: torch.Tensor) -> torch.Tensor:
        for name in NAMES:
            x = op(x.t() + 1, layername_impl.encode(name))  # transposed: the stride order matters
        return x

    x = torch.randn(4, 6, device=layername_device)
    _received.clear()
    actual = torch.compile(layers, backend="inductor", fullgraph=True)(x)  # compile_counter: fresh Dynamo + cache
    assert _received == NAMES
    torch.testing.assert_close(actual, layers(x))


# -- hoisted objects built with keyword arguments -----------------------------------------------------


def _echo_op(impl: Implementation):
    key = ("echo", "opaque")
    if key not in _OPS:
        resolve = impl.resolve

        def echo(x: torch.Tensor, layer_name: object) -> torch.Tensor:
            _received.append(resolve(layer_name))
            return x + 1

        echo.__annotations__["layer_name"] = impl.LayerName
        _OPS[key] = define_op("layername_fieldbugs::echo", echo, fake=lambda x, layer_name: torch.empty_like(x))
    return _OPS[key]


@pytest.mark.layername_requires_opaque
def test_layer_name_built_with_keyword_argument(layername_impl, layername_device):
    """A layer that builds its ``LayerName(value=...)`` with a keyword inside the compiled region.

    Every torch with hoisting so far raises "NYI: hoisted opaque objects that accept kwargs" (known bug
    ``hoisted-kwargs-nyi``): engines must build layer names positionally.
    """
    keyword = next(iter(inspect.signature(layername_impl.LayerName).parameters))
    op = _echo_op(layername_impl)

    def layers(x: torch.Tensor) -> torch.Tensor:
        for name in NAMES:
            x = op(x, layername_impl.LayerName(**{keyword: name}))
        return x

    x = torch.zeros(2, device=layername_device)
    _received.clear()
    torch._dynamo.reset()
    out = torch.compile(layers, backend="eager", fullgraph=True)(x)
    assert _received == NAMES and torch.equal(out, x + len(NAMES))
