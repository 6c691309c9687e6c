"""Layer names survive every hop to the op: encode/resolve, pickle, deepcopy, ``__fx_repr__``, compiled graphs, caches.

Property tests draw arbitrary names (unicode, dots, very long, code-like, quotes); the cache tests reload
an inductor artifact and check the op still gets the right name, never ``None`` (pytorch#181230).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_layername.checks.roundtrip import CACHE_METHODS, RoundTripError, assert_cache_roundtrip, check_roundtrip
from pytest_layername.core.compat import is_registered_opaque_type, opaque_base, register_value_type
from pytest_layername.core.implementation import Implementation

NASTY = [
    "model.layers.0.self_attn",
    "",
    "ü.名前.🙂",
    "a'b\"c",
    "'''\"\"\"",
    "\\",
    "__import__('os').system('exit 1')",
    "LayerName('spoof')",
    '"); raise SystemExit("',
    "{value!r}",
    "line\nbreak\ttab\x00nul",
    "x" * 4096,
]

segment = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)
layer_names = st.one_of(
    st.text(),  # arbitrary unicode, including empty and control characters
    st.lists(segment, min_size=1, max_size=8).map(".".join),  # dotted module paths
    st.builds(lambda part, times: part * times, st.text(min_size=1, max_size=8), st.integers(200, 2000)),  # very long
    st.text(alphabet="'\"\\()[]{}.,:;#=+ \n", max_size=40),  # quotes and code-like punctuation
    st.sampled_from(NASTY),
)

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(names=st.lists(layer_names, min_size=1, max_size=6))
def test_roundtrip_property(layername_roundtrip, names):
    """encode→resolve, pickle (all protocols), deepcopy, ``__fx_repr__`` (opaque) and an aot_eager graph."""
    layername_roundtrip(names)


def test_roundtrip_nasty_names_inductor(layername_impl, layername_mode, layername_device):
    """The same stages with inductor compiling the graph (strings in string mode are baked into its code)."""
    assert check_roundtrip(layername_impl, layername_mode, NASTY, compiler="inductor", device=layername_device) == []


@pytest.mark.parametrize("method", CACHE_METHODS)
def test_compile_cache_roundtrip(layername_impl, layername_mode, layername_device, method):
    """Reload an inductor artifact (cache hit / standalone save+load); the op gets the right names, never None.

    In opaque mode the reload runs with *other* names: the artifact serves any layer and the op sees the
    caller's names. torch 2.11-2.12 pickled opaque values to None on AOT cache load (pytorch#181230).
    """
    names = NASTY[:4]
    result = assert_cache_roundtrip(layername_impl, layername_mode, names, method, device=layername_device)
    assert None not in result.received_reloaded
    if method == "cache_hit":
        assert result.cache_hits >= 1 and result.cache_misses == 0, (result.cache_hits, result.cache_misses)
    assert result.received_reloaded == result.reload_names  # the op got what the caller passed
    if layername_mode == "opaque":  # renamed: the names must come from the caller, not from the artifact
        assert not set(result.reload_names) & set(names), result.reload_names


# -- the checks can fail: deliberately broken implementations -------------------------------------


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
