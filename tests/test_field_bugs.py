"""The harness's field checks, on the bundled reference and on torch itself (the suite checks the implementation).

``__fx_repr__`` contract (``field_checks.check_fx_repr``), opaque arguments with a schema default
(``field_checks.define_op``), feature detection on a torch whose ``register_opaque_type`` lacks ``hoist=``,
registering the type twice, impure fake implementations (``field_checks.check_fake_purity``), and that this
package logs no torch deprecation. Each check has its negative control here.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from pytest_layername.checks.field_checks import (
    FxReprError,
    ImpureFakeError,
    OpaqueDefaultError,
    check_fake_purity,
    check_fx_repr,
    define_op,
)
from pytest_layername.core.compat import REGISTRATION_APIS, detect_opaque_support
from pytest_layername.core.implementation import Implementation
from pytest_layername.core.modes import Mode
from pytest_layername.core.reference import LayerName, register_layer_name_type
from pytest_layername.harness.models import build_model, run

NAMES = ["model.layers.0.self_attn", "model.layers.1.self_attn", "model.layers.2.self_attn"]


_OPS: dict[tuple[str, str], object] = {}


_received: list[str] = []


def _layer_name_type(impl: Implementation, mode: Mode) -> type:
    return impl.layer_name_type(mode, "register the field-bug ops")


# -- __fx_repr__ contract ---------------------------------------------------------------------------


class _Named:
    def __init__(self, value: str) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


class StrOnly(_Named):
    def __fx_repr__(self):  # the torch 2.10-era habit: a bare source string
        return f"StrOnly({self.value!r})"


class ListGlobals(_Named):
    def __fx_repr__(self):
        return f"ListGlobals({self.value!r})", [ListGlobals]


class MissingGlobal(_Named):
    def __fx_repr__(self):
        return f"MissingGlobal({self.value!r})", {}


class Lossy(_Named):
    def __fx_repr__(self):
        return f"Lossy('{self.value}')", {"Lossy": Lossy}  # no !r: quotes in the name break it


def test_reference_fx_repr_contract_holds():
    assert check_fx_repr(LayerName("a'b\".c")) == LayerName("a'b\".c")


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (StrOnly, r"returned str .*expected a tuple \(source: str, globals: dict\[str, type\]\)"),
        (ListGlobals, r"returned \[<class .*ListGlobals'>\] as the globals; expected a dict"),
        (MissingGlobal, r"uses MissingGlobal but the globals dict only has \[\]; add every name the source uses"),
        (Lossy, r"returned source \"Lossy\('x'y'\)\" that is not a Python expression"),
    ],
)
def test_wrong_fx_repr_contract_is_a_clear_error(cls, message):
    with pytest.raises(FxReprError, match=message) as error:
        check_fx_repr(cls("x'y"))
    assert f"{cls.__qualname__}.__fx_repr__" in str(error.value)


@pytest.mark.layername_requires_opaque
def test_torch_own_fx_repr_error_is_unclear():
    """What torch >= 2.11 says for a bare-string ``__fx_repr__``: an unpacking error naming neither class nor fix."""
    from torch._library.opaque_object import get_opaque_obj_repr

    with pytest.raises((ValueError, TypeError)) as error:
        get_opaque_obj_repr(StrOnly("model.layers.0"))
    assert "StrOnly" not in str(error.value)


# -- opaque argument with a schema default ----------------------------------------------------------


DEFAULT_NAME = LayerName("model.layers.0")


def _with_default(x: torch.Tensor, layer_name: LayerName = DEFAULT_NAME) -> torch.Tensor:
    return x.clone()


def test_opaque_default_is_rejected_clearly_at_registration():
    with pytest.raises(OpaqueDefaultError) as error:
        define_op("layername_fieldbugs::with_default", _with_default, fake=torch.empty_like, opaque_types=[LayerName])
    message = str(error.value)
    assert "op layername_fieldbugs::with_default: parameter 'layer_name'" in message
    assert "Remove the default" in message
    assert not hasattr(torch.ops.layername_fieldbugs, "with_default")  # nothing was registered


@pytest.mark.layername_requires_opaque
def test_torch_itself_rejects_opaque_defaults():
    """Documents torch's own answer (>= 2.11): a ValueError at schema inference that asks for a bug report."""
    with pytest.raises(ValueError, match="unsupported default value type"):
        torch.library.custom_op("layername_fieldbugs::with_default_raw", _with_default, mutates_args=())


# -- a torch whose register_opaque_type lacks hoist= (vendor 2.11 builds), simulated -----------------


def _registration_api() -> str:
    """The name of the registration function this torch has (``register_custom_class`` from 2.14)."""
    from torch._library import opaque_object

    return next(name for name in REGISTRATION_APIS if hasattr(opaque_object, name))


@pytest.mark.layername_requires_opaque
def test_detection_without_hoist_keyword(monkeypatch):
    from torch._library import opaque_object

    monkeypatch.setattr(opaque_object, _registration_api(), lambda cls, *, typ: None)
    support = detect_opaque_support()
    assert not support.supported
    assert "does not accept hoist=" in support.reason


SIMULATION = textwrap.dedent(
    """
    import json, subprocess, sys, torch
    import torch._library.opaque_object as oo
    name = "register_custom_class" if hasattr(oo, "register_custom_class") else "register_opaque_type"
    real = getattr(oo, name)
    def register(cls, *, typ, **options):  # a vendor 2.11 build: no hoist= keyword
        options.pop("hoist", None)
        return real(cls, typ=typ, **options)
    setattr(oo, name, register)
    from pytest_layername.core import compat, modes, reference
    from pytest_layername.compile.measure import measure_compile
    out = {"support": compat.opaque_support().as_dict(), "auto": modes.auto_mode(),
           "registered": reference.OPAQUE_REGISTERED, "type": reference.LayerNameType.__name__}
    try:
        modes.resolve_mode("opaque")
    except modes.ModeError as error:
        out["opaque_error"] = str(error)
    m = measure_compile("decoder", 3, modes.auto_mode(), compiler="eager")
    out["stats"] = {"pieces": m.stats.pieces, "unique": m.stats.unique_pieces, "error": m.max_abs_error}
    print(json.dumps(out))
    """
)


@pytest.mark.layername_requires_opaque
def test_torch_without_hoist_falls_back_to_string_mode():
    """A fresh process whose torch lacks ``hoist=``: auto is string, opaque is refused with the reason, models run."""
    done = subprocess.run([sys.executable, "-c", SIMULATION], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["support"]["opaque_supported"] is False
    assert "does not accept hoist=" in out["support"]["opaque_reason"]
    assert (out["auto"], out["registered"], out["type"]) == ("string", False, "str")
    assert "does not accept hoist=" in out["opaque_error"]
    assert out["stats"]["unique"] == out["stats"]["pieces"] == 4  # 3 layers + tail, each baked: no dedup
    assert out["stats"]["error"] == 0.0


def test_registering_twice_is_harmless(layername_impl, layername_mode, layername_device, compile_counter):
    """``register_layer_name_type`` again (as a second import path would): torch still hoists; dedup still holds."""
    from pytest_layername.core.compat import is_hoisted_opaque_type

    registered = register_layer_name_type()
    assert register_layer_name_type() is registered  # no raise, same answer
    assert is_hoisted_opaque_type(LayerName) is registered  # torch's own record: still hoisted
    model = build_model("decoder", 4, layername_impl, layername_mode, device=layername_device)
    x = model.example_input()
    torch.testing.assert_close(run(model, compile_counter.compile(model, compiler="eager"), x), run(model, model, x))
    compile_counter.expect(pieces=5, unique_pieces=3 if layername_mode == "opaque" else 5)


DOUBLE_RAW = textwrap.dedent(
    """
    import json
    from torch._library.opaque_object import register_opaque_type, should_hoist
    from pytest_layername.core.implementation import load_implementation
    from pytest_layername.core.reference import LayerName
    try:
        register_opaque_type(LayerName, typ="value")  # a second, raw registration without hoist=True
        raised = None
    except Exception as error:
        raised = f"{type(error).__name__}: {error}"
    impl = load_implementation()
    print(json.dumps({"raised": raised, "hoist": should_hoist(LayerName), "reason": impl.opaque_unavailable_reason()}))
    """
)


@pytest.mark.layername_requires_opaque
def test_raw_second_registration_is_refused_and_any_lost_hoist_is_detected():
    """A raw second ``register_opaque_type`` raises; where it also drops hoisting (2.13), opaque mode is refused.

    The harness's verdict must follow torch's own record (``should_hoist``) either way.
    """
    done = subprocess.run([sys.executable, "-c", DOUBLE_RAW], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["raised"] is not None, out  # torch refuses re-registration
    if out["hoist"]:
        assert out["reason"] is None, out
    else:
        assert "not registered as a hoisted" in (out["reason"] or ""), out


# -- impure fake implementations --------------------------------------------------------------------

_PADDING = {name: 8 * (i + 1) for i, name in enumerate(NAMES)}  # global per-layer state


_FAKE_CALLS = itertools.count()  # global state a fake should never read


def _fake_ops(impl: Implementation, mode: Mode):
    """Three ops, same real body: a pure fake, one reading a global call counter, one reading a per-layer table."""
    key = ("fakes", mode)
    if key not in _OPS:
        resolve = impl.resolve
        fakes = {
            "pure": lambda x, layer_name: x.new_empty(x.shape[0], 8),
            "counter": lambda x, layer_name: x.new_empty(x.shape[0], 8 + next(_FAKE_CALLS) % 7),
            "by_name": lambda x, layer_name: x.new_empty(x.shape[0], _PADDING[resolve(layer_name)]),
        }
        ops = {}
        for label, fake in fakes.items():

            def padded(x: torch.Tensor, layer_name: object) -> torch.Tensor:
                return x.new_zeros(x.shape[0], 8)

            padded.__annotations__["layer_name"] = _layer_name_type(impl, mode)
            ops[label] = define_op(f"layername_fieldbugs::padded_{label}_{mode}", padded, fake=fake)
        _OPS[key] = ops
    return _OPS[key]


@pytest.mark.parametrize("impurity", ["counter", "by_name"])
def test_impure_fake_is_detected_and_reported(layername_impl, layername_mode, impurity):
    ops = _fake_ops(layername_impl, layername_mode)
    x = torch.randn(4, 8)

    def encode(name: str) -> object:
        return layername_impl.encode(name)

    assert len(check_fake_purity(ops["pure"], [x, None], 1, NAMES, encode)) == 2 * len(NAMES)
    with pytest.raises(ImpureFakeError) as error:
        check_fake_purity(ops[impurity], [x, None], 1, NAMES, encode)
    message = str(error.value)
    assert f"fake implementation of layername_fieldbugs::padded_{impurity}_{layername_mode}" in message
    assert "is not a pure function of its inputs" in message and "never read globals" in message


@pytest.mark.layername(modes=["opaque"])
def test_torch_refuses_fakes_that_read_the_layer_name(layername_impl, layername_mode):
    """torch 2.13, opaque mode: Dynamo hands fakes a FakeScriptObject, so reading the name fails at trace time."""
    op = _fake_ops(layername_impl, layername_mode)["by_name"]
    torch._dynamo.reset()
    with pytest.raises(Exception, match="fake kernel should not depend on the contents of the OpaqueObject"):
        torch.compile(lambda x: op(x, layername_impl.encode(NAMES[0])), backend="eager")(torch.randn(4, 8))


def test_impure_fake_breaks_dedup(layername_impl, layername_mode, compile_counter):
    """Measured: a fake reading a global counter makes identical layers hash apart, even with hoisted names."""
    ops = _fake_ops(layername_impl, layername_mode)

    def model(op):
        def forward(x: torch.Tensor) -> torch.Tensor:
            for name in NAMES:
                padded = torch.relu(op(x, layername_impl.encode(name)))  # piece boundary
                x = x + padded[:, :1]  # the next piece's input carries the fake's shape
            return x

        return forward

    unique = {}
    for label in ("pure", "counter"):
        before = {p.digest for p in compile_counter.stats.piece_records}
        x = torch.randn(4, 8)
        actual = compile_counter.compile(model(ops[label]), compiler="eager", splitting_ops=["torch.relu"])(x)
        torch.testing.assert_close(actual, x)
        unique[label] = len({p.digest for p in compile_counter.stats.piece_records} - before)
    if layername_mode == "opaque":
        assert unique["counter"] > unique["pure"], unique
    else:  # strings are baked: layers are unique either way
        assert unique["counter"] >= unique["pure"], unique


# -- torch 2.14's registration API: no deprecation message from this package ------------------------

DEPRECATIONS = textwrap.dedent(
    """
    import functools, json, logging
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(f"{record.name}: {record.getMessage()}")

    logging.getLogger("torch").addHandler(Keep(level=logging.WARNING))
    try:
        import torch._library.opaque_object as registry
    except ImportError:  # torch 2.9: no opaque types at all
        registry = None

    calls = []
    for name in ("register_custom_class", "register_opaque_type"):
        original = getattr(registry, name, None)
        if original is not None:
            @functools.wraps(original)  # keeps the signature the feature probe reads
            def spy(cls, *args, _name=name, _original=original, **kwargs):
                if cls.__module__.startswith("pytest_layername"):
                    calls.append([_name, cls.__qualname__, kwargs.get("typ"), kwargs.get("hoist")])
                return _original(cls, *args, **kwargs)
            setattr(registry, name, spy)
    from pytest_layername.core import compat, reference
    from pytest_layername.core.implementation import load_implementation
    from pytest_layername.compile.measure import measure_compile
    from pytest_layername.core.modes import auto_mode
    impl = load_implementation()
    impl.mode_problem("opaque")
    measure_compile("decoder", 2, auto_mode(), compiler="eager")
    CONTROL
    print(json.dumps({"records": [r for r in records if "deprecat" in r.lower()], "calls": calls}))
    """
)


def _deprecations(control: str = "") -> dict[str, list]:
    code = DEPRECATIONS.replace("CONTROL", control)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


NEW_API = hasattr(torch._library, "opaque_object") and hasattr(torch._library.opaque_object, "register_custom_class")


def test_no_deprecation_message_and_the_newest_registration_api():
    """Importing, registering, probing and compiling log no torch deprecation; the newest API registered us."""
    out = _deprecations()
    assert out["records"] == [], out["records"]
    if NEW_API:  # torch >= 2.14: register_custom_class(typ="constant"), never the deprecated wrapper
        assert out["calls"] == [["register_custom_class", "LayerName", "constant", True]], out["calls"]
    elif detect_opaque_support().supported:
        assert out["calls"] == [["register_opaque_type", "LayerName", "value", True]], out["calls"]
    else:
        assert out["calls"] == [], out["calls"]


@pytest.mark.skipif(not NEW_API, reason="torch < 2.14 has no deprecated opaque-type wrappers")
def test_deprecation_capture_sees_the_old_api():
    """Negative control: calling the deprecated ``register_opaque_type`` on torch >= 2.14 is caught."""
    control = (
        "class Old(compat.opaque_base()):\n"
        "    def __eq__(self, other): return self is other\n"
        "    def __hash__(self): return 0\n"
        "    def __fx_repr__(self): return 'Old()', {'Old': Old}\n"
        "registry.register_opaque_type(Old, typ='value')"
    )
    out = _deprecations(control)
    assert any("register_opaque_type is deprecated" in r for r in out["records"]), out["records"]
