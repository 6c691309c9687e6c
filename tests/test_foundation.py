"""The library without pytest: feature probe, modes, implementations, models, backend counts, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from pytest_layername.cli import main
from pytest_layername.compile.backend import BackendError, PiecewiseBackend
from pytest_layername.compile.measure import measure_compile
from pytest_layername.core import compat
from pytest_layername.core.implementation import ImplementationError, load_implementation
from pytest_layername.core.modes import ModeError, resolve_mode, resolve_modes
from pytest_layername.core.reference import LayerName, _encode_layer_name, _resolve_layer_name, use_mode
from pytest_layername.harness.models import ModelError, build_model

SUPPORTED = compat.opaque_support().supported
NEEDS_OPAQUE = pytest.mark.skipif(not SUPPORTED, reason=f"needs hoisted opaque types: {compat.opaque_support().reason}")
MODES = [pytest.param("opaque", marks=NEEDS_OPAQUE), "string"]
NO_HOIST = compat.OpaqueSupport(compat.torch_version(), False, "simulated: no hoist=")


def test_probe_detects_the_feature_on_this_torch() -> None:
    """Upstream torch has hoisted opaque types from 2.11 on: the feature probe must agree with the release."""
    support = compat.detect_opaque_support()
    assert support.supported == (compat.torch_version().release[:2] >= (2, 11)), support
    assert support.torch_version == compat.torch_version()


def test_probe_without_hoist_keyword_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._library import opaque_object

    monkeypatch.setattr(opaque_object, "register_opaque_type", lambda cls, *, typ: None)
    support = compat.detect_opaque_support()
    assert not support.supported
    assert "does not accept hoist=" in support.reason


def test_probe_without_opaque_base_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch._opaque_base", None)  # import now raises ImportError
    support = compat.detect_opaque_support()
    assert not support.supported and "torch._opaque_base" in support.reason


def test_modes_resolve_and_fail_clearly() -> None:
    supported = compat.OpaqueSupport(compat.torch_version(), True, None)
    assert resolve_mode("auto", supported) == "opaque"
    assert resolve_mode("auto", NO_HOIST) == "string"
    assert resolve_modes("both", NO_HOIST) == ["opaque", "string"]
    with pytest.raises(ModeError, match="simulated: no hoist="):
        resolve_mode("opaque", NO_HOIST)
    with pytest.raises(ModeError, match="unknown layer-name mode 'fast'"):
        resolve_modes("fast")


@NEEDS_OPAQUE
def test_reference_layer_name_contract() -> None:
    from torch._library import opaque_object

    name = LayerName("model.layers.0.self_attn")
    assert name == LayerName("model.layers.0.self_attn") and hash(name) == hash(LayerName(name.value))
    source, globals_ = name.__fx_repr__()
    assert eval(source, globals_) == name
    assert opaque_object.should_hoist(LayerName) and compat.is_registered_opaque_type(LayerName)
    with use_mode("opaque"):
        assert _encode_layer_name("a.b") == LayerName("a.b")
    with use_mode("string"):
        assert _encode_layer_name("a.b") == "a.b"
    assert _resolve_layer_name(LayerName("a.b")) == _resolve_layer_name("a.b") == "a.b"
    with pytest.raises(TypeError, match="expected LayerName or str, got NoneType"):
        _resolve_layer_name(None)


def test_impl_module_without_api_names_everything_missing() -> None:
    with pytest.raises(ImplementationError) as caught:
        load_implementation("json")
    message = str(caught.value)
    for name in ("LayerName", "_encode_layer_name", "_resolve_layer_name"):
        assert f"missing attribute {name!r}" in message
    with pytest.raises(ImplementationError, match="cannot import"):
        load_implementation("does_not_exist_anywhere")


def test_unknown_model_and_compiler_are_clear_errors() -> None:
    impl = load_implementation()
    with pytest.raises(ModelError, match="unknown model 'gpt'; choose one of: decoder, moe, hybrid"):
        build_model("gpt", 2, impl, "string")
    with pytest.raises(BackendError, match="unknown inner compiler 'tvm'"):
        PiecewiseBackend(compiler="tvm")


# The law (opaque 3 pieces at any N, strings N+1) at 4, at 12 (two-digit layer names) and at 32 layers (the
# README's decoder); 64, the same law once more, is in the slow tier.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers", [4, 12, 32, pytest.param(64, marks=pytest.mark.layername_slow)])
def test_unique_pieces_across_layer_counts(layers: int, mode: str) -> None:
    """Opaque stays at 3 unique pieces for any N; strings give N+1 (eager inner compiler: the hash decides)."""
    stats = measure_compile("decoder", layers, mode, compiler="eager").stats
    unique = 3 if mode == "opaque" else layers + 1
    assert (stats.pieces, stats.unique_pieces, stats.backend_compilations) == (layers + 1, unique, unique)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "unique"), [("moe", {"opaque": 3, "string": 9}), ("hybrid", {"opaque": 4, "string": 6})]
)
def test_other_models_have_the_same_shape_of_result(kind: str, unique: dict[str, int], mode: str) -> None:
    assert measure_compile(kind, 8, mode, compiler="eager").stats.unique_pieces == unique[mode]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_probe_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "probe", "--json")
    info = json.loads(out)
    assert code == 0 and info["torch"] == torch.__version__
    assert info["opaque_supported"] is SUPPORTED and info["auto_mode"] == ("opaque" if SUPPORTED else "string")


def test_cli_compile_stats_both_modes_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The command line's both-mode JSON: one result per mode, each piece detailed with what made it unique.

    Eager inner compiler: the counts here are the structural hash's. Torch's inductor counts for the same
    model are asserted by the suite (test_models), per piece as well (tests/test_trust.py).
    """
    argv = ["compile-stats", "--model", "decoder", "--layers", "8", "--mode", "both", "--compiler", "eager", "--json"]
    code, out, _ = _cli(capsys, *argv)
    output = json.loads(out)
    results = {r["mode"]: r for r in output["results"]}
    assert code == 0 and output["torch"] == torch.__version__ and set(results) == {"opaque", "string"}
    counts = ("pieces", "unique_pieces", "backend_compilations", "inductor_compiles", "hash_disagreements")
    assert tuple(results["string"][k] for k in counts) == (9, 9, 9, 0, 0)
    assert tuple(results["opaque"][k] for k in counts) == (9, 3, 3, 0, 0)
    for mode, result in results.items():
        assert result["compiler"] == "eager" and len(result["pieces_detail"]) == result["pieces"]
        assert sum(p["hash_new"] for p in result["pieces_detail"]) == result["unique_pieces"]
        baked = [p["baked"] for p in result["pieces_detail"] if p["baked"]]
        assert len(baked) == (8 if mode == "string" else 0), baked
    string_baked = [b for piece in results["string"]["pieces_detail"] for b in piece["baked"]]
    assert any("layer_name='model.layers.7.self_attn'" in b for b in string_baked), string_baked


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile-stats", "--mode", "fast"], "invalid choice: 'fast'"),
        (["compile-stats", "--model", "gpt"], "invalid choice: 'gpt'"),
        (["compile-stats", "--impl", "json", "--layers", "2"], "missing attribute 'LayerName'"),
    ],
)
def test_cli_bad_input_exits_non_zero(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


SIMULATE_NO_HOIST = """
    import torch._library.opaque_object as oo
    original = oo.register_opaque_type
    def register_opaque_type(cls, *, typ, **options):  # no hoist= parameter, as in torch 2.10
        return original(cls, typ=typ, **options)
    oo.register_opaque_type = register_opaque_type
    import torch, json
    from pytest_layername.core.environment import probe
    from pytest_layername.compile.measure import measure_compile
    stats = measure_compile("decoder", 4, "auto_mode_placeholder", compiler="eager").stats
    print(json.dumps({**probe(), "unique": stats.unique_pieces, "pieces": stats.pieces}))
"""


def test_package_works_on_a_torch_without_hoist() -> None:
    """In a fresh process whose torch lacks ``hoist=``: import works, auto is string, the string path runs."""
    code = textwrap.dedent(SIMULATE_NO_HOIST).replace(
        '"auto_mode_placeholder"', '__import__("pytest_layername.core.modes").core.modes.auto_mode()'
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["opaque_supported"] is False and "hoist=" in info["opaque_reason"]
    assert info["auto_mode"] == "string"
    assert info["pieces"] == info["unique"] == 5


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_every_inner_compiler_handles_pieces_returning_one_tensor(compiler: str) -> None:
    """The last piece of a split graph returns a single tensor, not a tuple; every inner compiler copes."""
    stats = measure_compile("decoder", 2, "string", compiler=compiler).stats
    assert (stats.pieces, stats.unique_pieces, stats.backend_compilations) == (3, 3, 3)
    if compiler == "inductor":  # the AOT-autograd cache is inductor's; aot_eager does not consult it
        assert stats.aot_autograd_cache_misses == stats.inductor_compiles == 3
