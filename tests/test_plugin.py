"""Behaviour of the pytest plugin, driven through pytester."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from pytest_layername.core import compat
from pytest_layername.release.report import load_report

MODE_TEST = """
    def test_mode(layername_mode):
        assert layername_mode in ("opaque", "string")

    def test_plain():
        pass
"""

COUNTER_TEST = """
    import torch
    from pytest_layername.harness.models import build_model, run

    def test_decoder(layername_mode, layername_impl, compile_counter):
        model = build_model("decoder", 4, layername_impl, layername_mode)
        x = model.example_input()
        compiled = compile_counter.compile(model, compiler="eager")
        torch.testing.assert_close(run(model, compiled, x), run(model, model, x))
        compile_counter.expect(pieces=5, unique_pieces=3 if layername_mode == "opaque" else 5, recompiles=0)
"""


@pytest.fixture
def unsupported_torch(monkeypatch: pytest.MonkeyPatch):
    """Simulate a torch whose register_opaque_type has no ``hoist=`` (torch 2.10, vendor 2.11 builds)."""
    from torch._library import opaque_object

    original = opaque_object.register_opaque_type

    def register_opaque_type(cls, *, typ, **options):  # no hoist= parameter, as in torch 2.10
        return original(cls, typ=typ, **options)

    monkeypatch.setattr(opaque_object, "register_opaque_type", register_opaque_type)
    compat.opaque_support.cache_clear()
    yield
    compat.opaque_support.cache_clear()


def test_both_modes_parametrize_mode_dependent_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-mode=both", "-v", "--strict-markers")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*test_mode[[]opaque[]] PASSED*", "*test_mode[[]string[]] PASSED*", "*test_plain PASSED*"]
    )


def test_single_mode_keeps_the_mode_id(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-mode=string", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_mode[[]string[]] PASSED*"])


def test_auto_mode_picks_opaque_where_supported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("-v")
    expected = "opaque" if compat.opaque_support().supported else "string"
    result.stdout.fnmatch_lines([f"*test_mode[[]{expected}[]] PASSED*"])


def test_unknown_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-mode=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--layername-mode*invalid choice*'fast'*"])


@pytest.mark.parametrize("source", ["ini", "env"])
def test_unknown_mode_from_ini_or_env_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(MODE_TEST)
    if source == "ini":
        pytester.makeini("[pytest]\nlayername_mode = fast\n")
    else:
        monkeypatch.setenv("LAYERNAME_MODE", "fast")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown layer-name mode 'fast'*auto, opaque, string, both*"])


def test_precedence_is_command_line_then_ini_then_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(MODE_TEST)
    monkeypatch.setenv("LAYERNAME_MODE", "both")
    pytester.runpytest("-v").stdout.fnmatch_lines(["*test_mode[[]string[]] PASSED*"])  # env alone: both
    pytester.makeini("[pytest]\nlayername_mode = string\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)  # ini beats env: string only
    result = pytester.runpytest("-v", "--layername-mode=both")
    result.assert_outcomes(passed=3)  # command line beats ini


def test_impl_without_api_is_a_usage_error_naming_what_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(halfimpl="def _encode_layer_name(name):\n    return name\n")
    pytester.syspathinsert()
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-impl=halfimpl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'halfimpl' is not a usable*missing attribute 'LayerName'*'_resolve_layer_name'*"])


def test_unimportable_impl_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-impl=no.such.module")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot import layer-name implementation 'no.such.module'*"])


USER_IMPL = """
    import torch
    from torch._opaque_base import OpaqueBase
    from torch._library.opaque_object import is_opaque_type, register_opaque_type

    class LayerName(OpaqueBase):
        def __init__(self, value):
            self.value = value
        def __eq__(self, other):
            return isinstance(other, LayerName) and other.value == self.value
        def __hash__(self):
            return hash(self.value)
        def __fx_repr__(self):
            return f"LayerName({self.value!r})", {"LayerName": LayerName}

    if not is_opaque_type(LayerName):
        register_opaque_type(LayerName, typ="value", hoist=True)

    def _encode_layer_name(name):
        return LayerName(name)

    def _resolve_layer_name(x):
        return x.value if isinstance(x, LayerName) else x
"""


@pytest.mark.skipif(not compat.opaque_support().supported, reason="needs hoisted opaque types")
def test_a_requested_mode_not_exercised_fails_unless_opted_out(pytester: pytest.Pytester) -> None:
    """An implementation without a mode switch cannot run string mode: ``both`` is a usage error naming why."""
    pytester.makepyfile(noswitch=USER_IMPL)  # its own module name: torch registers LayerName types by name
    pytester.syspathinsert()
    pytester.makepyfile(COUNTER_TEST)
    result = pytester.runpytest("--layername-impl=noswitch", "--layername-mode=both")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*layername: requested mode(s) string (--layername-mode=both) cannot be exercised: noswitch has no mode "
            "switch (_USE_LAYERNAME)*--layername-allow-not-exercised*"
        ]
    )


@pytest.mark.skipif(not compat.opaque_support().supported, reason="needs hoisted opaque types")
def test_suite_runs_against_another_implementation(pytester: pytest.Pytester) -> None:
    """With the opt-out, its native (opaque) mode runs; string is shown and recorded as not exercised."""
    pytester.makepyfile(userimpl=USER_IMPL)
    pytester.syspathinsert()
    pytester.makepyfile(COUNTER_TEST)
    result = pytester.runpytest(
        "--layername-impl=userimpl",
        "--layername-mode=both",
        "--layername-allow-not-exercised",
        "-v",
        "--layername-report=r.json",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "layername:*impl userimpl (native opaque, switch none)*",
            "layername: string mode NOT EXERCISED: userimpl has no mode switch (_USE_LAYERNAME)*",
            "*test_decoder[[]opaque[]] PASSED*",
        ]
    )
    run = load_report(pytester.path / "r.json")["run"]
    assert run["modes"] == ["opaque"] and "string" in run["not_exercised"] and run["impl_switch"] is None
    assert run["allow_not_exercised"] is True


@pytest.mark.skipif(not compat.opaque_support().supported, reason="needs hoisted opaque types")
def test_only_a_mode_the_implementation_cannot_run_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(noswitchimpl=USER_IMPL)  # its own module name: torch keys opaque types by qualname
    pytester.syspathinsert()
    pytester.makepyfile(COUNTER_TEST)
    result = pytester.runpytest("--layername-impl=noswitchimpl", "--layername-mode=string")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no requested mode can run: noswitchimpl has no mode switch*"])


def test_compile_counter_expect_passes_and_reports_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTER_TEST)
    result = pytester.runpytest("--layername-mode=both")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*layername compile stats*", "opaque*5*3*0*0*0*test_decoder[[]opaque[]]", "string*5*5*0*0*0*"]
    )


def test_compile_counter_expect_failure_shows_a_diff(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTER_TEST.replace("unique_pieces=3 if", "unique_pieces=4 if"))
    result = pytester.runpytest("--layername-mode=opaque")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*compile counts differ from expectation: unique_pieces expected 4, got 3*"])


def test_broken_str_op_fails_expect_naming_op_and_constant(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch
        from pytest_layername.testing.broken import break_model
        from pytest_layername.harness.models import build_model, run

        def test_broken(layername_impl, compile_counter):
            model = break_model(build_model("decoder", 16, layername_impl, "opaque"))
            x = model.example_input()
            run(model, compile_counter.compile(model, compiler="eager"), x)
            compile_counter.expect(unique_pieces=3)
        """
    )
    result = pytester.runpytest("--layername-mode=opaque")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*unique_pieces*3*17*",
            "*unique only because*",
            "*layername_broken::scale_by_layer(layer_name='model.layers.*.mlp')*",
        ]
    )


def test_fusion_matches_fixture_and_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_layername.fusion.log import record_match, record_patterns

        def test_fused(fusion_matches):
            record_patterns("demo_fusion", ["p0"])
            for _ in range(4):
                record_match("demo_fusion", "p0")
            fusion_matches.expect("demo_fusion", matched=4, patterns=1)

        def test_wrong(fusion_matches):
            record_patterns("demo_fusion", ["p0", "p1"])
            fusion_matches.expect("demo_fusion", matched=1)
        """
    )
    result = pytester.runpytest("--layername-mode=string", "--layername-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fusion pass 'demo_fusion': matched: expected 1, got 0*"])
    tests = {t["nodeid"].split("::")[1]: t for t in load_report(pytester.path / "r.json")["tests"]}
    assert tests["test_fused"]["mode"] is None  # fusion_matches needs no layername_mode
    assert tests["test_fused"]["fusion"]["demo_fusion"] == {
        "patterns": 1,
        "matched": 4,
        "per_pattern": {"p0": 4},
    }


def test_markers_are_registered_and_skip_with_reasons(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.layername(modes=["string"])
        def test_string_only(layername_mode):
            assert layername_mode == "string"

        @pytest.mark.layername_requires_cuda
        def test_cuda():
            pass

        @pytest.mark.layername_requires_opaque
        def test_opaque():
            pass
        """
    )
    result = pytester.runpytest("--layername-mode=both", "--strict-markers", "-rs")
    cuda = torch.cuda.is_available()
    result.assert_outcomes(passed=2 + cuda, skipped=2 - cuda)
    result.stdout.fnmatch_lines(["*test runs only in mode(s) [[]'string'[]]*"])
    if not cuda:
        result.stdout.fnmatch_lines(["*layername_requires_cuda: no CUDA device: torch.cuda.is_available() is False*"])


def test_bad_layername_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.layername(modes=["fast"])
        def test_x(layername_mode):
            pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*layername(modes=[[]...[]]) takes 'opaque' and/or 'string', got [[]'fast'[]]*"])
    assert result.ret != pytest.ExitCode.OK


def test_without_opaque_support_auto_is_string_and_opaque_cases_skip(
    pytester: pytest.Pytester, unsupported_torch: None
) -> None:
    pytester.makepyfile(
        textwrap.dedent(MODE_TEST)
        + "\n\nimport pytest\n\n@pytest.mark.layername_requires_opaque\ndef test_needs():\n    pass\n"
    )
    result = pytester.runpytest("--layername-mode=both", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "layername:*opaque unsupported*does not accept hoist=*",
            "*opaque mode unavailable*hoist=*",
            "*requires_opaque:*",
        ]
    )
    assert pytester.runpytest("-v").ret == 0  # auto resolves to string
    result = pytester.runpytest("--layername-mode=opaque")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mode 'opaque'*does not accept hoist=*"])


def test_header_names_torch_mode_impl_device(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-mode=both")
    result.stdout.fnmatch_lines(
        [
            f"layername: torch {torch.__version__}, opaque *, mode both -> opaque,string, "
            "impl pytest_layername.core.reference "
            "(native *, switch pytest_layername.core.reference._USE_LAYERNAME), device *"
        ]
    )


def test_json_report_has_both_modes_and_metadata(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTER_TEST)
    result = pytester.runpytest("--layername-mode=both", "--layername-report=out/report.json")
    result.assert_outcomes(passed=2)
    report = load_report(pytester.path / "out" / "report.json")
    assert report["complete"] is True
    run = report["run"]
    assert run["torch"] == torch.__version__ and run["modes"] == ["opaque", "string"]
    assert run["requested_mode"] == "both" and run["start"] and run["end"]
    assert run["impl_native_mode"] == ("opaque" if compat.opaque_support().supported else "string")
    assert run["impl_switch"] == "pytest_layername.core.reference._USE_LAYERNAME" and run["not_exercised"] == {}
    assert {t["mode"] for t in report["tests"]} == {"opaque", "string"}
    by_mode = {t["mode"]: t for t in report["tests"]}
    assert by_mode["opaque"]["stats"]["unique_pieces"] == 3
    assert by_mode["string"]["stats"]["unique_pieces"] == 5
    assert report["summary"] == {"passed": 2, "failed": 0, "skipped": 0, "xfailed": 0, "error": 0, "total": 2}


def test_xdist_merges_workers_into_one_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTER_TEST)
    pytester.makepyfile(test_more=MODE_TEST)
    result = pytester.runpytest_subprocess("-n", "2", "--layername-mode=both", "--layername-report=r.json")
    result.assert_outcomes(passed=5)
    report = load_report(pytester.path / "r.json")
    assert report["complete"] is True and report["run"]["workers"] == 2
    assert report["summary"]["passed"] == 5
    stats = {t["mode"]: t["stats"]["unique_pieces"] for t in report["tests"] if t["stats"]}
    assert stats == {"opaque": 3, "string": 5}


def test_crashed_xdist_worker_yields_incomplete_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        def test_ok():
            pass

        def test_crash():
            os._exit(3)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--layername-report=r.json")
    assert result.ret != 0
    report = load_report(pytester.path / "r.json")
    assert report["complete"] is False
    assert "crash" in report["incomplete_reason"]
    outcomes = {t["nodeid"].split("::")[1]: t["outcome"] for t in report["tests"]}
    assert outcomes["test_ok"] == "passed" and outcomes["test_crash"] in ("failed", "error")


def test_report_is_written_even_when_tests_fail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_fail():\n    assert False\n")
    pytester.runpytest("--layername-report=r.json").assert_outcomes(failed=1)
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["complete"] is True and report["summary"]["failed"] == 1


def test_layername_roundtrip_fixture_passes_for_the_reference(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_names(layername_roundtrip):
            layername_roundtrip(["model.layers.0.self_attn", "décodeur.1", "a'b\\"c", "__import__('os')"])
        """
    )
    mode = "both" if compat.opaque_support().supported else "string"
    result = pytester.runpytest(f"--layername-mode={mode}", "-v")
    result.assert_outcomes(passed=2 if mode == "both" else 1)


BAD_RESOLVE_IMPL = """
    from pytest_layername.core.reference import LayerName

    _USE_LAYERNAME = True

    def _encode_layer_name(name):
        return LayerName(name) if _USE_LAYERNAME else name

    def _resolve_layer_name(x):
        return x.value.lower() if isinstance(x, LayerName) else x.lower()
"""


def test_layername_roundtrip_fixture_catches_a_lossy_resolve(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(badimpl=BAD_RESOLVE_IMPL)
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        def test_names(layername_roundtrip):
            layername_roundtrip(["model.Layers.0"])
        """
    )
    result = pytester.runpytest("--layername-mode=string", "--layername-impl=badimpl")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*round trip failed for badimpl in string mode*", "*[[]encode[]] 'model.Layers.0'*"])


# -- devices -------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_device_without_a_gpu_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MODE_TEST)
    result = pytester.runpytest("--layername-device=cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*device 'cuda' requested but no CUDA device is available*"])


def test_cpu_device_is_recorded_in_header_and_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_device(layername_device):
            assert layername_device == "cpu"
        """
    )
    result = pytester.runpytest("--layername-device=cpu", "--layername-report=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["layername: *device cpu (*)"])
    run = load_report(pytester.path / "r.json")["run"]
    assert run["device"] == "cpu" and run["device_name"] and run["cuda_version"] is None


# -- known torch bugs: strict expected failures ------------------------------------------------------

KNOWN_BUG_TESTS = """
    import pytest

    class TestRight:
        def test_layer_name_built_with_keyword_argument(self):
            raise RuntimeError("NYI: hoisted opaque objects that accept kwargs, please pass as args")

    class TestFixed:
        def test_layer_name_built_with_keyword_argument(self):
            pass

    class TestOtherReason:
        def test_layer_name_built_with_keyword_argument(self):
            '''NYI: hoisted opaque objects that accept kwargs (only in the source, not the error)'''
            raise ValueError("something else broke")
"""


@pytest.mark.skipif(not compat.opaque_support().supported, reason="hoisted-kwargs-nyi applies from torch 2.11")
def test_known_bug_is_a_strict_expected_failure_for_its_reason_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(KNOWN_BUG_TESTS)
    result = pytester.runpytest("-rxX", "--layername-report=r.json")
    result.assert_outcomes(xfailed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "layername: known torch bug hoisted-kwargs-nyi expected (*)",
            "*[[]XPASS(strict)[]] known torch bug hoisted-kwargs-nyi * no longer fails on torch*",
            "*expected hoisted-kwargs-nyi (failure matching 'NYI: hoisted opaque objects that accept kwargs') but it "
            "failed otherwise*",
        ]
    )
    tests = {t["nodeid"].split("::")[1]: t for t in load_report(pytester.path / "r.json")["tests"]}
    assert tests["TestRight"]["outcome"] == "xfailed" and tests["TestRight"]["known_bug"] == "hoisted-kwargs-nyi"
    assert tests["TestFixed"]["outcome"] == tests["TestOtherReason"]["outcome"] == "failed"


def test_shipped_suite_needs_no_marker_registration_from_the_user(pytester: pytest.Pytester) -> None:
    """Collected from another project (no ini of ours), under --strict-markers: every marker is the plugin's."""
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_layername.suite", "--collect-only", "-q", "--strict-markers", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:] + result.stderr.str()[-2000:]
    assert "Unknown pytest.mark" not in result.stdout.str() + result.stderr.str()
