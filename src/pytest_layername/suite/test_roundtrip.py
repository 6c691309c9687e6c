"""Layer names survive every hop to the op: encode/resolve, pickle, deepcopy, ``__fx_repr__``, compiled graphs, caches.

Property tests draw arbitrary names (unicode, dots, very long, code-like, quotes) and pairs of names that
differ by one character, by case only or by a suffix: different names must stay different. Pickles, the
compile caches and the import itself are checked in a fresh Python process, where an engine's worker or a
restarted server meets them; the cache tests check the op still gets the right name, never ``None``
(pytorch#181230).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_layername.checks.fresh_process import run_fresh
from pytest_layername.checks.roundtrip import CACHE_METHODS, assert_cache_roundtrip, check_roundtrip, fresh_process

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


def _one_character_apart(name: str, data: st.DataObject) -> str:
    index = data.draw(st.integers(0, len(name) - 1))
    other = data.draw(st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(lambda c: c != name[index]))
    return name[:index] + other + name[index + 1 :]


@st.composite
def name_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two names: equal (as separate objects), one character apart, different in case only, or one a prefix."""
    name = draw(layer_names.filter(bool))
    kind = draw(st.sampled_from(["equal", "one_character", "case", "prefix", "any"]))
    if kind == "equal":
        return name, "".join(list(name))
    if kind == "one_character":
        return name, _one_character_apart(name, draw(st.data()))
    if kind == "case" and name.swapcase() != name:
        return name, name.swapcase()
    if kind == "prefix":
        return name, name + draw(st.sampled_from(["0", "1", ".", "_", "x", "0.self_attn"]))
    return name, draw(layer_names)


@PROPERTY
@given(pair=name_pairs())
def test_distinct_names_stay_distinct(layername_impl, layername_mode, pair):
    """Different names encode to unequal values with different hashes; equal names to equal values, equal hashes.

    An engine keys per-layer state by encoded names: two layers whose names compare equal share one entry.
    """
    a, b = pair
    encoded_a, encoded_b = layername_impl.encode(a), layername_impl.encode(b)
    if a == b:
        assert encoded_a == encoded_b and hash(encoded_a) == hash(encoded_b), (encoded_a, encoded_b)
        return
    assert encoded_a != encoded_b, f"{a!r} and {b!r} encode to equal values (__ne__)"
    assert not encoded_a == encoded_b, f"{a!r} and {b!r} encode to equal values (__eq__)"  # noqa: SIM201
    assert hash(encoded_a) != hash(encoded_b), f"{a!r} and {b!r} encode to values with the same hash"
    assert len({encoded_a: a, encoded_b: b}) == 2, f"a dict keyed by {a!r} and {b!r} keeps one entry"


def test_roundtrip_nasty_names_inductor(layername_impl, layername_mode, layername_device):
    """The same stages with inductor compiling the graph (strings in string mode are baked into its code)."""
    assert check_roundtrip(layername_impl, layername_mode, NASTY, compiler="inductor", device=layername_device) == []


@pytest.mark.parametrize("method", CACHE_METHODS)
def test_compile_cache_roundtrip(layername_impl, layername_mode, layername_device, method):
    """Reload an inductor artifact (cache hit / standalone save+load); the op gets the right names, never None.

    In opaque mode the reload runs with *other* names: the artifact serves any layer and the op sees the
    caller's names. torch 2.11-2.12 pickled opaque values to None on AOT cache load (pytorch#181230).
    """
    names = [*NASTY[:4], "model.layers.11.mlp.experts"]
    result = assert_cache_roundtrip(layername_impl, layername_mode, names, method, device=layername_device)
    assert None not in result.received_reloaded
    if method == "cache_hit":
        assert result.cache_hits >= 1 and result.cache_misses == 0, (result.cache_hits, result.cache_misses)
    assert result.received_reloaded == result.reload_names  # the op got what the caller passed
    if layername_mode == "opaque":  # renamed: the names must come from the caller, not from the artifact
        assert not set(result.reload_names) & set(names), result.reload_names


FRESH_NAMES = ("model.layers.0.self_attn", "model.layers.11.mlp.experts", "model.layers.1.mixer", *NASTY[2:6])


def test_pickles_load_in_another_process(layername_impl, layername_mode):
    """Names pickled here load in a fresh process, and its pickles load here (every protocol, both ways)."""
    fresh = fresh_process(layername_impl, layername_mode, FRESH_NAMES)
    assert not fresh.pickle_failures, "\n".join(str(f) for f in fresh.pickle_failures)
    assert fresh.compile_error is None, f"compiling the probe in a fresh process failed: {fresh.compile_error}"
    assert fresh.received == FRESH_NAMES, f"the probe compiled in a fresh process received {fresh.received}"


@pytest.mark.layername(modes=["opaque"])
def test_registered_hoisted_at_import(layername_impl, layername_mode):
    """In a fresh process, importing the module registers LayerName hoisted: ops declared at import can use it."""
    fresh = fresh_process(layername_impl, layername_mode, FRESH_NAMES)
    assert fresh.hoisted_at_import, (
        f"{layername_impl.module_name}.LayerName is not registered as a hoisted opaque type right after the module "
        "is imported in a fresh process (registered lazily, or not at all)"
    )
    assert fresh.declare_error is None, f"declaring an op with LayerName at import failed: {fresh.declare_error}"


def test_no_torch_deprecation_from_the_implementation(layername_impl, layername_mode):
    """Importing and using the implementation (register, declare an op, encode, pickle) logs no torch deprecation.

    torch 2.14 deprecated ``register_opaque_type`` and ``torch._opaque_base``: an implementation still on them
    fails here on those torches.
    """
    assert fresh_process(layername_impl, layername_mode, FRESH_NAMES).deprecations == ()


def test_falls_back_to_strings_on_torch_without_hoisting(layername_impl):
    """On a torch that looks like 2.10 (no hoist=, no opaque base class), the implementation imports and encodes str."""
    names = list(FRESH_NAMES[:3])
    answer = run_fresh({"job": "old_torch", "impl": layername_impl.module_name, "names": names})
    assert answer["error"] is None, f"importing or using {layername_impl.module_name} there failed: {answer['error']}"
    assert answer["types"] == ["str"] * len(names), f"encoded to {answer['types']} instead of str"
    assert answer["resolved"] == names
