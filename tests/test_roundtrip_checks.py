"""The round-trip checks can fail: implementations with a forgetful pickle, a lossy ``__fx_repr__``, no hoisting.

Negative controls of :mod:`pytest_layername.checks.roundtrip` (the suite runs the checks on the implementation
under test; these run them on deliberately broken ``LayerName`` types).
"""

from __future__ import annotations

import pytest

from pytest_layername.checks.fresh_process import run_fresh
from pytest_layername.checks.roundtrip import RoundTripError
from pytest_layername.core.compat import is_registered_opaque_type, opaque_base, register_value_type
from pytest_layername.core.implementation import Implementation


class _Base:
    def __init__(self, value: str) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class ForgetfulPickle(_Base):
    """Pickles to an empty name, as a ``__reduce__`` written for an older attribute layout would."""

    def __reduce__(self):
        return type(self), ("",)

    def __fx_repr__(self):
        return f"ForgetfulPickle({self.value!r})", {"ForgetfulPickle": ForgetfulPickle}


class UnquotedFxRepr(_Base):
    """``__fx_repr__`` without ``!r``: the source is not the name once it holds a dot or a quote."""

    def __fx_repr__(self):
        return f"UnquotedFxRepr({self.value})", {"UnquotedFxRepr": UnquotedFxRepr}


class NotHoisted(_Base, opaque_base()):  # type: ignore[misc]
    """Registered as a value opaque type *without* ``hoist=True`` (by the test that uses it)."""

    def __fx_repr__(self):
        return f"NotHoisted({self.value!r})", {"NotHoisted": NotHoisted}


class _ValuesOnly(Implementation):
    """A synthetic implementation for the value stages only (pickle, copy, fx repr): any torch can run them."""

    def mode_problem(self, mode):
        return None


def _broken(cls: type) -> Implementation:
    return _ValuesOnly(f"broken_{cls.__name__}", cls, cls, lambda v: v.value if isinstance(v, cls) else v)


def _value_failures(cls: type, names: list[str]) -> list[str]:
    from pytest_layername.checks.roundtrip import _value_failures as failures_of

    return [str(f) for name in names for f in failures_of(_broken(cls), "opaque", name)]


def test_broken_pickle_is_reported_per_name_and_stage():
    import pickle

    failures = _value_failures(ForgetfulPickle, ["model.layers.3.mlp"])
    for stage in [f"pickle(protocol={p})" for p in range(pickle.HIGHEST_PROTOCOL + 1)] + ["copy", "deepcopy"]:
        assert f"[{stage}] 'model.layers.3.mlp': resolves to ''" in failures, (stage, failures)
    assert not [f for f in failures if f.startswith(("[encode]", "[fx_repr]"))], failures


def test_broken_fx_repr_is_reported():
    failures = _value_failures(UnquotedFxRepr, ["model.layers.0"])
    assert len(failures) == 1 and failures[0].startswith("[fx_repr] 'model.layers.0':"), failures
    assert "{value!r}" in failures[0] or "quote" in failures[0]


@pytest.mark.layername_requires_opaque
def test_unhoisted_value_type_is_caught_baking_names():
    """A value opaque type registered without ``hoist=True`` is baked into the graph: the compiled stage says so."""
    if not is_registered_opaque_type(NotHoisted):
        register_value_type(NotHoisted, hoist=False)

    class Unchecked(Implementation):
        def opaque_unavailable_reason(self) -> str | None:  # let the probe register despite hoist=False
            return None

    impl = Unchecked("broken_not_hoisted", NotHoisted, NotHoisted, lambda v: v.value)
    with pytest.raises(RoundTripError) as error:
        from pytest_layername.checks.roundtrip import assert_roundtrip

        assert_roundtrip(impl, "opaque", ["model.layers.0.self_attn", "model.layers.1.self_attn"])
    message = str(error.value)
    assert "[compiled(aot_eager)] 'model.layers.1.self_attn': baked into the graph as a constant" in message, message


OLD_TORCH_PROBE = """
import torch
from pytest_layername.core.reference import LayerName, _encode_layer_name, _resolve_layer_name  # noqa: F401
import torch.distributed.device_mesh  # torch's own module: registers opaque types with members= on import
from torch._dynamo.decorators import leaf_function  # noqa: F401  (torch imports torch._opaque_base here)

_USE_LAYERNAME = False
"""


def test_the_old_torch_simulation_hides_only_what_torch_2_10_lacks(tmp_path, monkeypatch):
    """Outside torch: version 2.10.0, no torch._opaque_base, no hoist=; torch's own modules import as usual."""
    (tmp_path / "old_torch_probe.py").write_text(OLD_TORCH_PROBE)
    (tmp_path / "imports_opaque_base.py").write_text(
        OLD_TORCH_PROBE.replace("import torch\n", "import torch\nfrom torch._opaque_base import OpaqueBase\n", 1)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["model.layers.0.self_attn"]
    answer = run_fresh({"job": "old_torch", "impl": "old_torch_probe", "names": names})
    assert answer == {"error": None, "types": ["str"], "resolved": names}
    answer = run_fresh({"job": "old_torch", "impl": "imports_opaque_base", "names": names})
    assert "No module named 'torch._opaque_base' (torch 2.10.0 has none)" in answer["error"], answer
