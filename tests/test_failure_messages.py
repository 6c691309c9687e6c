"""What a user reads when a compile test fails: torch's reasons in the message, a trace to open, clean logs."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from pytest_layername.compile.expectations import CountMismatch, expect_counts
from pytest_layername.compile.graph_breaks import LOGGING_MODULES
from pytest_layername.compile.session import compile_session
from pytest_layername.release.report import load_report

LOGGING_TEST = """
    import logging
    import torch

    def test_logs():
        fn = torch.compile(lambda x: x * x.sum().item(), backend="eager")  # .item(): torch logs a warning
        fn(torch.ones(3))
        logging.getLogger("user").warning("user warning: deliberately logged")
        assert False
"""


#: pytest 9.2 also captures non-propagating loggers (torch's); older pytest never sees their records at all.
CAPTURES_TORCH_LOGGERS = pytest.version_tuple >= (9, 2)


def _captured_log(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Captured log call" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("===", "---", "___")))
    return lines[start + 1 : end]


def test_captured_logs_keep_warnings_and_drop_torch_trace_records(pytester: pytest.Pytester) -> None:
    """The plugin, once used, keeps torch's empty trace records out; torch's warning and the user's stay."""
    pytester.makepyfile(LOGGING_TEST)
    active = _captured_log(pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layername-mode=string"))
    assert any("WARNING  user:" in line and "deliberately logged" in line for line in active), active
    assert not [line for line in active if "torch.__trace" in line], active
    # the control: the same run with the plugin unused (inert) shows torch's records, as torch does under pytest
    inert = _captured_log(pytester.runpytest_subprocess("-p", "no:cacheprovider"))
    assert any("deliberately logged" in line for line in inert)
    inert_trace = [line for line in inert if "torch.__trace" in line]
    if CAPTURES_TORCH_LOGGERS:
        assert any("WARNING  torch." in line and "Tensor.item()" in line for line in active), active
        assert len(inert_trace) > 10, inert
    else:  # nothing of torch's reaches this pytest's capture, with or without the plugin
        assert not inert_trace, inert


# -- the three failing cases: what the message says, read as the user reads it ----------------------

GRAPH_BREAK_TEST = """
    import torch

    def model(x):
        x = x.sin()
        torch._dynamo.graph_break()
        y = x.sum().item()
        return x.cos() * y

    def test_graph_break(compile_counter):
        compile_counter.compile(model, compiler="eager")(torch.ones(3))
        compile_counter.expect(dynamo_frames=1, graphs=1)
"""


def _line_of(source: str, text: str) -> int:
    """The 1-based line of ``text`` in the test file pytester writes from ``source`` (ground truth for locations)."""
    import textwrap

    lines = textwrap.dedent(source).strip("\n").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def _failure(result: pytest.RunResult) -> str:
    result.assert_outcomes(failed=1)
    return result.stdout.str()


def _no_internals(output: str) -> None:
    """Internal frames are hidden and no large repr is printed."""
    for internal in ("def expect_counts", "def expect(", "stats = CompileStats(", "expectations.py:", "counters.py:"):
        assert internal not in output, internal


def test_graph_break_message_names_torchs_reasons_and_the_user_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_graph_break=GRAPH_BREAK_TEST)
    output = _failure(pytester.runpytest("-p", "no:cacheprovider"))
    user_break, item = _line_of(GRAPH_BREAK_TEST, "graph_break()"), _line_of(GRAPH_BREAK_TEST, ".item()")
    lines = [line.removeprefix("E   ").strip() for line in output.splitlines() if line.startswith("E ")]
    assert lines[0].endswith(
        "compile counts differ from expectation: dynamo_frames expected 1, got 3; graphs expected 1, got 3"
    ), lines[0]
    assert lines[1] == (
        f"why: graph break at test_graph_break.py:{user_break}: Call to `torch._dynamo.graph_break()` (and 1 more)"
    )
    blocks = "\n".join(lines)
    assert f"test_graph_break.py:{user_break} (1x): Call to `torch._dynamo.graph_break()`" in blocks
    assert "> torch._dynamo.graph_break()" in blocks
    assert "Hint: Remove the `torch._dynamo.graph_break()` call." in blocks
    assert f"test_graph_break.py:{item} (1x): Unsupported Tensor.item() call" in blocks
    assert "> y = x.sum().item()" in blocks
    assert lines[-1].startswith("torch's trace of this test: rerun with --layername-trace=DIR")
    _no_internals(output)


def test_without_a_graph_break_none_is_reported(pytester: pytest.Pytester) -> None:
    """The control: the same wrong count without a graph break gives no graph-break explanation."""
    pytester.makepyfile(
        test_whole="""
        import torch

        def test_whole(compile_counter):
            compile_counter.compile(lambda x: x.sin().cos(), compiler="eager")(torch.ones(3))
            compile_counter.expect(dynamo_frames=2)
        """
    )
    output = _failure(pytester.runpytest("-p", "no:cacheprovider"))
    assert "dynamo_frames expected 2, got 1" in output
    assert "graph break" not in output and "why:" not in output


RECOMPILE_TEST = """
    import torch

    def scaled(x, scale):
        return x * scale

    def test_recompile(compile_counter):
        fn = compile_counter.compile(scaled, compiler="eager", dynamic=False)
        fn(torch.ones(3), 2.0)
        fn(torch.ones(3), 3.0)
        fn(torch.ones(3, dtype=torch.float64), 3.0)
        compile_counter.expect(recompiles=0)
"""


def test_recompile_message_gives_every_guard_failure_in_full(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_recompile=RECOMPILE_TEST)
    output = _failure(pytester.runpytest("-p", "no:cacheprovider"))
    body = _line_of(RECOMPILE_TEST, "return x * scale")
    lines = [line.removeprefix("E   ").strip() for line in output.splitlines() if line.startswith("E ")]
    assert lines[0].endswith("compile counts differ from expectation: recompiles expected 0, got 2"), lines[0]
    assert lines[1] == "why: recompile of scaled: 0/0: scale == 2.0 (and 1 more)"
    text = "\n".join(lines)
    definition = _line_of(RECOMPILE_TEST, "def scaled")
    assert f"frame 0/1, scaled at test_recompile.py:{definition}, because:" in text
    # the whole guard failure, not its first line: torch's user stack of the guard
    assert "User stack trace:" in text and f'test_recompile.py", line {body}, in scaled' in text
    assert "return x * scale" in text
    assert "tensor 'x' dtype mismatch. expected Float, actual Double" in text
    _no_internals(output)


def test_unexpected_new_piece_shows_the_diff_against_the_piece_it_resembles(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_new_piece="""
        from pytest_layername.harness.models import build_model, run
        from pytest_layername.testing.broken import break_model

        def test_new_piece(layername_impl, compile_counter):
            model = break_model(build_model("decoder", 3, layername_impl, "string"))
            run(model, compile_counter.compile(model, compiler="eager"), model.example_input())
            compile_counter.expect(unique_pieces=3)
        """
    )
    output = _failure(pytester.runpytest("-p", "no:cacheprovider", "--layername-mode=string"))
    lines = [line.removeprefix("E   ").strip() for line in output.splitlines() if line.startswith("E ")]
    assert lines[0].endswith("unique_pieces expected 3, got 4"), lines[0]
    assert lines[1].startswith("why: 2 piece(s) unique only because a constant is baked in, e.g. ")
    text = "\n".join(lines)
    # the layer names are what break_model passes (f"model.layers.{index}.mlp"): layer 1's piece against layer 0's
    assert "piece submod_4 got an artifact of its own; against submod_2, which it resembles:" in text
    first = next(line for line in lines if line.startswith("first difference: node %"))
    node = first.split()[3]
    assert first == (
        f"first difference: node {node} layername_broken::scale_by_layer, argument layer_name: "
        "'model.layers.0.mlp'  ->  'model.layers.1.mlp'"
    )
    assert f"-{node} = call_function layername_broken::scale_by_layer(" in text
    assert f"+{node} = call_function layername_broken::scale_by_layer(" in text
    assert "--- submod_2" in text and "+++ submod_4" in text
    _no_internals(output)


def test_a_healthy_model_gets_no_piece_diff(pytester: pytest.Pytester) -> None:
    """The control: identical layers share their piece, so a wrong count shows no invented difference."""
    pytester.makepyfile(
        test_healthy="""
        from pytest_layername.harness.models import build_model, run

        def test_healthy(layername_impl, compile_counter):
            model = build_model("decoder", 3, layername_impl, "opaque")
            run(model, compile_counter.compile(model, compiler="eager"), model.example_input())
            compile_counter.expect(unique_pieces=4)
        """
    )
    output = _failure(pytester.runpytest("-p", "no:cacheprovider", "--layername-mode=opaque"))
    assert "unique_pieces expected 4, got 3" in output
    assert "first difference" not in output and "got an artifact of its own" not in output


# -- a trace to open ---------------------------------------------------------------------------------

TRACED_TESTS = """
    import torch

    def test_first(compile_counter):
        compile_counter.compile(lambda x: x.sin() + 1, compiler="eager")(torch.ones(3))
        compile_counter.expect(dynamo_frames=2)

    def test_second(compile_counter):
        compile_counter.compile(lambda x: x.cos() * 2, compiler="eager")(torch.ones(3))
        compile_counter.expect(dynamo_frames=2)

    def test_compiles_nothing():
        pass
"""


def _trace_records(path: Path) -> list[dict[str, object]]:
    """Each record's metadata, parsed the way tlparse reads a trace: a glog prefix, then JSON."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("\t"):
            continue  # a payload line
        prefix, _, metadata = line.partition("] ")
        assert prefix[0] in "VIWE" and ":" in prefix, line
        records.append(json.loads(metadata))
    return records


@pytest.mark.parametrize("source", ["option", "ini", "env"])
def test_trace_per_test_is_named_in_the_message_junit_and_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile(test_traced=TRACED_TESTS)
    args = ["-p", "no:cacheprovider", "--junitxml=junit.xml", "--layername-report=r.json"]
    if source == "option":
        args.append("--layername-trace=traces")
    elif source == "ini":
        pytester.makeini("[pytest]\nlayername_trace = traces\n")
    else:
        monkeypatch.setenv("LAYERNAME_TRACE", "traces")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=2)
    traces = pytester.path / "traces"
    first, second = traces / "test_traced.py__test_first.log", traces / "test_traced.py__test_second.log"
    assert sorted(p.name for p in traces.iterdir()) == [first.name, second.name]  # nothing compiled: no file
    result.stdout.fnmatch_lines(
        [
            "E       torch's trace of this test: traces/test_traced.py__test_first.log",
            "E       render it with: tlparse traces/test_traced.py__test_first.log "
            "-o traces/test_traced.py__test_first --overwrite",
        ]
    )
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    properties = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert properties["test_first"]["layername_trace"] == str(first)
    assert properties["test_second"]["layername_trace"] == str(second)
    assert "layername_trace" not in properties["test_compiles_nothing"]
    tests = {t["nodeid"].split("::")[1]: t for t in load_report(pytester.path / "r.json")["tests"]}
    assert tests["test_second"]["trace"] == str(second) and tests["test_compiles_nothing"]["trace"] is None
    for path in (first, second):  # each file stands alone: every interned string it refers to is defined in it
        records = _trace_records(path)
        defined = {r["str"][1] for r in records if "str" in r}
        used = {frame["filename"] for r in records for frame in r.get("stack", []) if isinstance(frame, dict)}
        used |= {f["filename"] for r in records for v in r.values() if isinstance(v, dict) for f in v.get("stack", [])}
        assert used and used <= defined, (path.name, sorted(used - defined))
        assert any("dynamo_start" in r for r in records)


# -- the graph-break log, read without printing ------------------------------------------------------


@contextlib.contextmanager
def _user_context():
    yield


def _skipped(x: torch.Tensor) -> torch.Tensor:
    with _user_context():  # Dynamo cannot resume inside a user context manager: it skips the frame
        x = x + 1
        torch._dynamo.graph_break()
    return x * 2


def test_a_skipped_frame_is_explained_from_the_log_alone(capfd: pytest.CaptureFixture[str]) -> None:
    """Torch counts no ``graph_break`` for a frame it skips; its graph-break log still says where and why."""
    with compile_session() as session:
        torch.compile(_skipped, backend=session.backend("eager"))(torch.ones(3))
        stats = session.stats
    with pytest.raises(CountMismatch) as caught:
        expect_counts(stats, graphs=1)
    line = inspect.getsourcelines(_skipped)[1] + 3  # the graph_break() call
    message = str(caught.value).splitlines()
    assert message[0] == "compile counts differ from expectation: graphs expected 1, got 0"
    assert message[1].startswith(f"why: graph break at tests/test_failure_messages.py:{line}: Failed to handle")
    assert "Graph break encountered: Call to `torch._dynamo.graph_break()`" in message[1]
    assert "  > torch._dynamo.graph_break()" in "\n".join(message)
    assert "Graph break under GenericContextWrappingVariable" in "\n".join(message)
    assert "Graph break" not in capfd.readouterr().err  # collected, not printed


def test_graph_break_log_leaves_torchs_loggers_as_it_found_them(caplog: pytest.LogCaptureFixture) -> None:
    """Off: enabled for the session only and restored. Asked for by the user: their records still arrive."""
    loggers = [torch._logging.getArtifactLogger(m, "graph_breaks") for m in LOGGING_MODULES]
    before = [(logger.level, logger.propagate, list(logger.filters)) for logger in loggers]
    with compile_session() as session:
        torch.compile(_skipped, backend=session.backend("eager"))(torch.ones(3))
        assert session.stats.graph_breaks
    assert [(logger.level, logger.propagate, list(logger.filters)) for logger in loggers] == before
    assert not [r for r in caplog.records if "graph_breaks" in r.name]  # nothing reached pytest's capture
    user_asks = caplog.at_level(logging.DEBUG, logger=loggers[0].name)  # as TORCH_LOGS=graph_breaks does
    with user_asks, compile_session() as session:
        torch.compile(_skipped, backend=session.backend("eager"))(torch.ones(3))
        assert session.stats.graph_breaks
    if CAPTURES_TORCH_LOGGERS:  # older pytest never captures torch's non-propagating loggers, asked or not
        assert [r for r in caplog.records if "graph_breaks" in r.name and "Graph break" in r.getMessage()]


def test_nested_sessions_both_see_a_graph_break() -> None:
    """A session inside another (a check that compiles inside a counted test): both hear torch's log."""
    with compile_session() as outer:
        with compile_session() as inner:
            torch.compile(_skipped, backend=inner.backend("eager"))(torch.ones(3))
            inner_breaks = inner.stats.graph_breaks
        outer_breaks = outer.stats.graph_breaks
    assert inner_breaks and outer_breaks == inner_breaks
