"""The reference ops: schemas per mode, name resolution inside op bodies, fake/real agreement."""

from __future__ import annotations

import pytest
import torch

from pytest_layername.core.forward_context import forward_context
from pytest_layername.harness.models import build_model, run
from pytest_layername.harness.ops import get_ops


def test_schema_takes_opaque_or_str(layername_mode, layername_impl):
    ops = get_ops(layername_impl, layername_mode)
    schema = str(ops.attention_with_output.default._schema)
    expected = "PyObject layer_name" if layername_mode == "opaque" else "str layer_name"
    assert expected in schema, schema
    assert "Tensor(a3!) output" in schema


@pytest.mark.parametrize("index", [1, 11])
def test_ops_find_their_layer_by_name(index, layername_mode, layername_impl, layername_device):
    """The KV-cache op writes this step's keys and values to the named layer's cache, and to no other layer's."""
    model = build_model("decoder", 12, layername_impl, layername_mode, device=layername_device)
    ops = get_ops(layername_impl, layername_mode)
    target = model.layers[index].mixer
    key = torch.randn(model.tokens, target.heads, target.head_dim, device=layername_device)
    with model.context():
        ops.kv_cache_update(key, key * 2, layername_impl.encode(target.prefix))
    for layer in (block.mixer for block in model.layers):
        new = layer.kv_cache[:, layer.history :]
        expected = torch.stack([key, key * 2]) if layer is target else torch.zeros_like(new)
        torch.testing.assert_close(new, expected, msg=lambda m, layer=layer: f"{layer.prefix}: {m}")
        history = model.ground_truth_state[layer.prefix].kv_cache[:, : layer.history]
        torch.testing.assert_close(layer.kv_cache[:, : layer.history], history)


def test_unknown_layer_name_is_a_clear_error(layername_mode, layername_impl):
    ops = get_ops(layername_impl, layername_mode)
    key = torch.randn(8, 2, 16)
    with forward_context({}), pytest.raises(KeyError, match=r"no layer named 'model\.layers\.9\.self_attn'"):
        ops.kv_cache_update(key, key, layername_impl.encode("model.layers.9.self_attn"))


@pytest.mark.parametrize("kind", ["decoder", "moe", "hybrid"])
def test_fake_and_real_agree(kind, layername_mode, layername_impl, layername_device):
    """Tracing with fake tensors (as torch.compile does) gives the shapes and dtypes eager produces."""
    model = build_model(kind, 2, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    real = run(model, model, x)
    with torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
        fake = run(model, model, fake_mode.from_tensor(x))
    assert (fake.shape, fake.dtype, fake.device) == (real.shape, real.dtype, real.device)
