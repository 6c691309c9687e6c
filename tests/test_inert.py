"""The installed plugin stays inert in a run that uses none of it, and its results reach JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

#: a plugin loaded with -p that records, after every other plugin has unconfigured, what the run left behind
CHECKER = """
import json, os, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    with open("after_session.json", "w") as f:
        json.dump({"torch": "torch" in sys.modules, "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                   "impl": "pytest_layername.core.reference" in sys.modules}, f)
"""
PLAIN_TEST = "def test_plain():\n    assert 1 + 1 == 2\n"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TORCHINDUCTOR_CACHE_DIR", "LAYERNAME_MODE", "LAYERNAME_DEVICE", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAYERNAME_FRESH_PROCESS", "exec")  # these runs check what the child imports: never forked


def _after_session(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    pytester.makepyfile(layername_checker=CHECKER)
    result = pytester.runpytest_subprocess("-p", "layername_checker", "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str()
    return json.loads((pytester.path / "after_session.json").read_text())


def test_plain_run_imports_no_torch_and_keeps_the_environment(pytester: pytest.Pytester, clean_env: None) -> None:
    pytester.makepyfile(test_plain=PLAIN_TEST)
    after = _after_session(pytester)
    assert after == {"torch": False, "cache_dir": None, "impl": False}


def test_help_imports_no_torch(pytester: pytest.Pytester, clean_env: None) -> None:
    pytester.makepyfile(test_plain=PLAIN_TEST)
    after = _after_session(pytester, "--help")
    assert after["torch"] is False


def test_an_option_turns_the_plugin_on(pytester: pytest.Pytester, clean_env: None) -> None:
    """The negative control: the same check sees torch and the implementation once the plugin is used."""
    pytester.makepyfile(test_plain=PLAIN_TEST)
    after = _after_session(pytester, "--layername-mode=string")
    assert after["torch"] is True and after["impl"] is True
    assert after["cache_dir"] is None  # the cache dir belongs to the fixtures; none ran


def test_a_fixture_turns_the_plugin_on_and_its_cache_dir_is_restored(
    pytester: pytest.Pytester, clean_env: None
) -> None:
    pytester.makepyfile(
        test_uses="""
        import os

        def test_counts(compile_counter):
            assert os.environ["TORCHINDUCTOR_CACHE_DIR"]  # isolated while the test compiles
            compile_counter.expect(pieces=0)
        """
    )
    after = _after_session(pytester, "-s")
    assert after["torch"] is True and after["cache_dir"] is None


def test_header_appears_when_a_fixture_started_the_run(pytester: pytest.Pytester, clean_env: None) -> None:
    pytester.makepyfile("def test_mode(layername_mode):\n    assert layername_mode in ('opaque', 'string')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["layername: torch *", "*passed*"])


#: an unrelated project's own ``requires_cuda`` and ``slow`` markers: its conftest gives them their meaning
FOREIGN_CONFTEST = """
import os
import pytest

def pytest_configure(config):
    config.addinivalue_line("markers", "requires_cuda: ours: skip unless FOREIGN_CUDA is set")
    config.addinivalue_line("markers", "slow: ours: run only when FOREIGN_SLOW is set")

def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_cuda") and not os.environ.get("FOREIGN_CUDA"):
        pytest.skip("foreign: no FOREIGN_CUDA")
    if item.get_closest_marker("slow") and not os.environ.get("FOREIGN_SLOW"):
        pytest.skip("foreign: slow")
"""
FOREIGN_TESTS = """
import pytest

@pytest.mark.requires_cuda
def test_cuda_kernel():
    pass

@pytest.mark.slow
def test_long():
    pass

def test_plain():
    pass
"""


def _outcomes(pytester: pytest.Pytester, *args: str) -> tuple[dict[str, str], dict[str, object]]:
    """Each test's outcome (a skip with its reason) and what the session left behind, in a fresh process."""
    pytester.makepyfile(layername_checker=CHECKER)
    result = pytester.runpytest_subprocess(
        "-p", "layername_checker", "-p", "no:cacheprovider", "--junitxml=out.xml", *args
    )
    assert result.ret == 0, result.stdout.str()
    outcomes = {}
    for case in ET.parse(pytester.path / "out.xml").getroot().iter("testcase"):
        problems = [
            f"{child.tag}: {child.get('message')}" for child in case if child.tag in ("skipped", "failure", "error")
        ]
        outcomes[case.get("name")] = "; ".join(problems) or "passed"
    return outcomes, json.loads((pytester.path / "after_session.json").read_text())


@pytest.mark.parametrize("env", [{}, {"FOREIGN_CUDA": "1", "FOREIGN_SLOW": "1"}])
def test_a_foreign_projects_requires_cuda_and_slow_markers_are_left_alone(
    pytester: pytest.Pytester, clean_env: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """Its tests run exactly as without the plugin, and the session ends with no torch imported."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makeconftest(FOREIGN_CONFTEST)
    pytester.makepyfile(test_foreign=FOREIGN_TESTS)
    with_plugin, after = _outcomes(pytester, "--strict-markers")
    without_plugin, _ = _outcomes(pytester, "--strict-markers", "-p", "no:layername")
    assert with_plugin == without_plugin and len(with_plugin) == 3, (with_plugin, without_plugin)
    assert after == {"torch": False, "cache_dir": None, "impl": False}
    markers = pytester.runpytest_subprocess("--markers", "-p", "no:cacheprovider").stdout.lines
    assert [line for line in markers if line.startswith(("@pytest.mark.slow:", "@pytest.mark.requires_cuda:"))] == [
        "@pytest.mark.requires_cuda: ours: skip unless FOREIGN_CUDA is set",
        "@pytest.mark.slow: ours: run only when FOREIGN_SLOW is set",
    ]


def test_the_plugins_own_marker_in_the_same_project_is_seen(pytester: pytest.Pytester, clean_env: None) -> None:
    """The negative control: the same comparison tells a run the plugin took part in from one without it."""
    pytester.makeconftest(FOREIGN_CONFTEST)
    pytester.makepyfile(test_foreign=FOREIGN_TESTS.replace("mark.requires_cuda", "mark.layername_requires_cuda"))
    with_plugin, after = _outcomes(pytester, "--strict-markers", "--layername-device=cpu")
    assert after["torch"] is True
    assert "layername_requires_cuda" in with_plugin["test_cuda_kernel"], with_plugin
    pytester.makepyfile(test_foreign=FOREIGN_TESTS)
    without_plugin, _ = _outcomes(pytester, "--strict-markers", "-p", "no:layername")
    assert with_plugin != without_plugin


def test_junit_xml_carries_mode_and_counts_per_test(pytester: pytest.Pytester, clean_env: None) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_compiled(layername_mode, compile_counter):
            fn = compile_counter.compile(lambda x: x.sin() + 1, compiler="eager")
            fn(torch.ones(3))
            compile_counter.expect(dynamo_frames=1, pieces=1)

        def test_counter_without_mode(compile_counter):
            compile_counter.compile(lambda x: x.cos(), compiler="eager")(torch.ones(2))
        """
    )
    result = pytester.runpytest_subprocess("--layername-mode=both", "-n", "2", "--junitxml=junit.xml")
    result.assert_outcomes(passed=3)
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    props = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")} for case in cases}
    assert set(props) == {"test_compiled[opaque]", "test_compiled[string]", "test_counter_without_mode"}
    for mode in ("opaque", "string"):
        case = props[f"test_compiled[{mode}]"]
        assert case["layername_mode"] == mode
        assert (case["layername_dynamo_frames"], case["layername_pieces"]) == ("1", "1")
        assert json.loads(case["layername_stats"])["pieces"] == 1
    assert "layername_mode" not in props["test_counter_without_mode"]
    assert props["test_counter_without_mode"]["layername_dynamo_frames"] == "1"
