"""Compile-cache faults on the reference decoder (issue 27): every start after a fault gives the ground truth,
and says what it did: a clean warm load, a recompile with torch's reason, or a loud error.

The ground truth is computed in this process (:mod:`pytest_layername.compile.reference_truth`), never in the
start that read the cache. Expected artifact counts come from the decoder's structure: 4 layers give 5
pieces, 3 distinct with ``LayerName`` and 5 with strings; each distinct piece leaves one FX-graph entry, one
AOT-autograd entry (or more: its key may tell pieces apart that inductor's does not) and one Python module
in the cache. A cold start is copied (``clone_cache``) to serve
several faults. The repeated and expensive cases are ``layername_slow``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_layername.compile.cache_events import CacheEvent
from pytest_layername.compile.cache_faults import (
    ArtifactSelector,
    CopyFrom,
    FaultNotInjected,
    FlipBit,
    FlipBytes,
    StartSpec,
    Truncate,
    WrongOutput,
    artifacts,
    attempt,
    clone_cache,
    damage_artifact,
    judge_start,
    kill_when_written,
    start_together,
)
from pytest_layername.compile.reference_truth import reference_truth
from pytest_layername.compile.start_outcome import OutcomeMismatch, classify, expect_outcome
from pytest_layername.compile.stats import CompileStats
from shared_cold import LAYERS, decoder_cold

KINDS = 3  # files per distinct piece: FX-graph entry, AOT-autograd entry, Python module
#: a stale unreadable entry torch skips (it stays next to the good one torch wrote)
SKIPPED = r"could not load an entry"


def distinct(mode: str) -> int:
    return 3 if mode == "opaque" else LAYERS + 1


def other(mode: str) -> str:
    return "string" if mode == "opaque" else "opaque"


class Decoder:
    """The 4-layer reference decoder's start in one mode, its ground truth, and a cold cache to clone."""

    def __init__(self, compile_cache: Any, mode: str, factory: pytest.TempPathFactory) -> None:
        self.cache, self.mode, self.factory = compile_cache, mode, factory
        self.spec: StartSpec = compile_cache.reference_spec("decoder", LAYERS, mode)
        self.truth = reference_truth(model="decoder", layers=LAYERS, mode=mode, impl=compile_cache.impl)

    def cold(self) -> Path:
        """The run's cold start on an empty directory (shared_cold.py; a test clones its cache, never writes
        to it): it compiled every distinct piece and gave the ground truth."""
        start = decoder_cold(self.cache, self.mode, self.factory)
        folder = Path(start.cache_dir)
        done = judge_start(start, fault="none (cold)", truth=self.truth)
        self.cache.record(done)
        done.expect("recompiled", reason=r"FX-graph cache miss: no loadable entry")
        assert done.outcome.compiled == distinct(self.mode), done.outcome
        written = {kind: len(files) for kind, files in artifacts(folder).items()}
        assert written["fx_graph"] == written["output_code"] == distinct(self.mode), written
        assert written["aot_autograd"] >= distinct(self.mode), written  # AOT-autograd keys may split a piece kind
        return folder

    def clone(self, cold: Path, name: str) -> Path:
        return clone_cache(cold, self.cache.directory(name))

    def next(self, folder: Path, fault: str, label: str = "next", spec: StartSpec | None = None, truth=None):
        done = attempt(spec or self.spec, folder, fault=fault, truth=truth or self.truth, label=label)
        self.cache.record(done)
        return done


@pytest.fixture
def decoder(compile_cache: Any, layername_mode: str, tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_cache, layername_mode, tmp_path_factory)


# --- the faults on the reference decoder, both modes ------------------------------------------------------------


def test_a_truncated_fx_graph_entry_recompiles_with_torchs_reason(decoder: Decoder) -> None:
    cold = decoder.cold()
    folder = decoder.clone(cold, "truncated")
    damage_artifact(folder, ArtifactSelector("fx_graph", 0), Truncate())
    after = decoder.next(folder, "truncated FX-graph entry")
    after.expect("recompiled", reason=r"FX-graph cache could not load an entry: UnpicklingError")
    assert after.outcome.compiled >= 1 and after.outcome.loaded == LAYERS + 1 - 1, after.outcome
    with pytest.raises(OutcomeMismatch, match=r"expected loaded, got recompiled"):
        after.expect("loaded")  # negative control: a recompile is never reported as a warm start


@pytest.mark.layername(modes=["string"])
def test_negative_control_another_layers_artifact_that_loads_is_caught_by_the_output_check(decoder: Decoder) -> None:
    """String mode bakes each layer's name into its piece. Layer 2's FX-graph entry copied over layer 1's, or
    one bit flipped in the name baked into layer 1's Python module (``model.layers.1`` -> ``.3``): torch loads
    it as a clean warm start, and only the ground truth says the output is wrong."""
    cold = decoder.cold()
    copied = decoder.clone(cold, "copied")
    damage_artifact(copied, ArtifactSelector("fx_graph", 1), CopyFrom(ArtifactSelector("fx_graph", 2)))
    tampered = decoder.clone(cold, "tampered")
    damage_artifact(tampered, ArtifactSelector("output_code", 1), FlipBit(b"model.layers.1.", 13, 0x02))
    for folder, fault in ((copied, "layer 2's FX-graph entry over layer 1's"), (tampered, "layer name bit flip")):
        after = decoder.next(folder, fault)
        assert after.outcome.kind == "loaded" and after.output == "wrong", after.summary()
        with pytest.raises(WrongOutput, match=r"differs from the ground truth .* by [0-9.]+ in [1-9][0-9]* of 256"):
            after.expect("loaded")


@pytest.mark.layername_slow  # a killed start, then two full starts, per mode
@pytest.mark.parametrize("when", ["first", "mid-way"])
def test_a_start_killed_while_writing_leaves_a_cache_the_next_start_completes(decoder: Decoder, when: str) -> None:
    total = KINDS * distinct(decoder.mode)  # at least: AOT-autograd may write more
    after_files = 1 if when == "first" else total // 2
    folder = decoder.cache.directory(f"killed-{when}")
    killed = kill_when_written(decoder.spec, folder, after=after_files)
    assert killed.returncode < 0 and after_files <= killed.files < total, killed  # interrupted before the end
    after = decoder.next(folder, f"killed at the {when} artifact (after {killed.files} files)")
    after.expect("recompiled", reason=r"FX-graph cache miss: no loadable entry")
    again = decoder.next(folder, f"killed at the {when} artifact", label="again")
    again.expect("loaded")  # the interrupted writes left nothing that poisons the cache


@pytest.mark.layername_slow  # one cold start and ten starts per mode
def test_every_damaged_artifact_kind_recovers(decoder: Decoder) -> None:
    """Truncated or garbled FX-graph and AOT-autograd entries: the next start recompiles what it cannot load,
    naming why, and gives the ground truth; the start after it loads (past the stale entry torch leaves)."""
    cold = decoder.cold()
    cases = [
        ("fx_graph", Truncate(), r"FX-graph cache could not load an entry: UnpicklingError"),
        ("fx_graph", FlipBytes(), r"FX-graph cache could not load an entry"),
        ("aot_autograd", Truncate(), r"AOT-autograd cache could not load an entry"),
        ("aot_autograd", FlipBytes(), r"AOT-autograd cache could not load an entry"),
    ]
    for index, (kind, damage, reason) in enumerate(cases):
        folder = decoder.clone(cold, f"damaged-{index}")
        damage_artifact(folder, ArtifactSelector(kind, 1), damage)
        fault = f"{type(damage).__name__} {kind}[1]"
        decoder.next(folder, fault).expect("recompiled", reason=reason)
        again = decoder.next(folder, fault, label="again")
        again.expect("loaded", reason=SKIPPED if again.outcome.reasons else None)  # the stale file may sort first


@pytest.mark.layername_slow  # one cold start and two starts per mode
def test_a_start_in_the_other_mode_on_the_same_cache(decoder: Decoder) -> None:
    """LayerName written, strings read (or the reverse): the other mode's pieces miss and compile, with the
    other mode's ground truth; back in the first mode everything loads."""
    cold = decoder.clone(decoder.cold(), "other-mode")
    flipped = decoder.spec.changed(kwargs={"mode": other(decoder.mode)})
    truth = reference_truth(model="decoder", layers=LAYERS, mode=other(decoder.mode), impl=decoder.cache.impl)
    fault = f"{decoder.mode} cache, {other(decoder.mode)} start"
    after = decoder.next(cold, fault, spec=flipped, truth=truth)
    after.expect("recompiled", reason=r"FX-graph cache miss: no loadable entry")
    assert after.start is not None and after.start.result["mode"] == other(decoder.mode)
    decoder.next(cold, fault, label="back").expect("loaded")


@pytest.mark.layername_slow  # two cold starts at once and a third start, five times per mode
@pytest.mark.parametrize("run", range(5))
def test_two_starts_at_once_on_one_cache(decoder: Decoder, run: int) -> None:
    """Both give the ground truth (each loads what the other wrote before its lookup and compiles the rest);
    the start after them loads everything."""
    folder = decoder.cache.directory("together")
    sides = start_together([decoder.spec, decoder.spec], folder, truth=decoder.truth, fault="two starts at once")
    decoder.cache.record(*sides)
    for side in sides:
        assert side.outcome.kind in ("recompiled", "loaded"), side.summary()
        side.expect(side.outcome.kind, reason=r"FX-graph cache" if side.outcome.kind == "recompiled" else None)
        assert side.outcome.compiled + side.outcome.loaded >= LAYERS + 1, side.outcome
    counts = "; ".join(f"{s.label} compiled {s.outcome.compiled} loaded {s.outcome.loaded}" for s in sides)
    print(f"run {run}: {counts}")
    decoder.next(folder, "two starts at once", label="after").expect("loaded")


@pytest.mark.layername_slow  # known torch bug: one cold start and one start per mode
def test_a_truncated_python_module_of_a_cached_graph_recompiles(decoder: Decoder) -> None:
    """The cached graph's module cut short: the start should recompile it (known bug: every start fails)."""
    folder = decoder.clone(decoder.cold(), "module-truncated")
    damage_artifact(folder, ArtifactSelector("output_code", 1), Truncate())
    decoder.next(folder, "truncated Python module").expect("recompiled")


@pytest.mark.layername_slow  # known torch bug: one cold start and one start
@pytest.mark.layername(modes=["string"])
def test_a_tampered_python_module_of_a_cached_graph_is_not_served(decoder: Decoder) -> None:
    """One bit flipped in the layer name baked into a cached module: the start should not run it (known bug:
    torch runs the module as found on disk, a silently wrong layer)."""
    folder = decoder.clone(decoder.cold(), "module-tampered")
    damage_artifact(folder, ArtifactSelector("output_code", 1), FlipBit(b"model.layers.1.", 13, 0x02))
    decoder.next(folder, "tampered Python module").expect("recompiled")


# --- the machinery, without torch compiles ---------------------------------------------------------------------

WRITER = "cache_fault_targets:write_artifacts"
WRITER_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}


def test_kill_when_written_kills_mid_way_and_says_when_it_could_not(tmp_path: Path) -> None:
    """A target writing 4 FX-graph-like entries 0.5 s apart is killed after the 2nd; asking for a 5th, which
    never comes, raises instead of reporting a kill that did not happen."""
    killed = kill_when_written(StartSpec(WRITER, {"files": 4, "pause": 0.5}, WRITER_ENV), tmp_path / "a", after=2)
    assert killed.returncode < 0 and 2 <= killed.files < 4, killed
    with pytest.raises(FaultNotInjected, match=r"with 4 artifact file\(s\), before 5"):
        kill_when_written(StartSpec(WRITER, {"files": 4, "pause": 0.0}, WRITER_ENV), tmp_path / "b", after=5)


def test_an_engines_own_cache_root_is_the_starts_directory(tmp_path: Path) -> None:
    """``cache_env`` names the engine's cache-root variable: the start writes below its directory; without it
    the variable is unset and nothing is written (negative control)."""
    spec = StartSpec(WRITER, {"files": 4, "pause": 0.5, "root_env": "FAKE_ENGINE_ROOT"}, WRITER_ENV)
    killed = kill_when_written(replace(spec, cache_env=("FAKE_ENGINE_ROOT",)), tmp_path / "a", after=2)
    assert killed.returncode < 0 and 2 <= killed.files < 4, killed
    with pytest.raises(FaultNotInjected, match=r"exited \(1\) or timed out with 0 artifact file\(s\)"):
        kill_when_written(spec, tmp_path / "b", after=1)


def test_artifacts_are_selected_by_kind_and_write_order_and_damage_keeps_that_order(tmp_path: Path) -> None:
    for index, name in enumerate(["zz", "aa", "mm"]):  # names unordered: the write order decides
        path = tmp_path / "fxgraph" / name[:2] / f"f{name}" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(b"model.layers.%d.self_attn" % index)
        os.utime(path, ns=(index * 10**9, index * 10**9))
    (tmp_path / "fxgraph" / "aa" / "faa" / ".123.tmp").write_bytes(b"an atomic write in flight")
    assert [p.name for p in artifacts(tmp_path)["fx_graph"]] == ["zz", "aa", "mm"]
    damaged = damage_artifact(tmp_path, ArtifactSelector("fx_graph", 1), FlipBit(b"model.layers.", 13, 0x02))
    assert Path(damaged.path).read_bytes() == b"model.layers.3.self_attn"
    assert [p.name for p in artifacts(tmp_path)["fx_graph"]] == ["zz", "aa", "mm"]  # the mtime is kept
    damage_artifact(tmp_path, ArtifactSelector("fx_graph", -1), CopyFrom(ArtifactSelector("fx_graph", 0)))
    assert (tmp_path / "fxgraph/mm/fmm/mm").read_bytes() == b"model.layers.0.self_attn"
    twice = tmp_path / "fxgraph" / "aa" / "faa" / "aa"
    twice.write_bytes(b"model.layers.1.attn(model.layers.1.kv)")
    renamed = FlipBit(b"model.layers.1.", 13, 0x02, every=True)
    damage_artifact(tmp_path, ArtifactSelector("fx_graph", -1), renamed)  # written now: the newest
    assert twice.read_bytes() == b"model.layers.3.attn(model.layers.3.kv)"  # every occurrence, not the first
    assert damage_artifact(tmp_path, ArtifactSelector("fx_graph", 0), Truncate(0.25)).size_after == 6
    with pytest.raises(FaultNotInjected, match=r"fx_graph\[3\]: .* holds 3 fx_graph artifact"):
        damage_artifact(tmp_path, ArtifactSelector("fx_graph", 3), Truncate())
    with pytest.raises(FaultNotInjected, match="holds no"):
        damage_artifact(tmp_path, ArtifactSelector("fx_graph", 2), FlipBit(b"absent", 0))


def test_a_listing_that_races_with_a_writer_is_taken_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start removes its build directories while the parent lists the cache (seen on the engine: pathlib's
    glob raised FileNotFoundError); the listing is taken again, and a cache that never settles still fails."""
    entry = tmp_path / "fxgraph" / "aa" / "faa" / "aa"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"entry")
    real_glob, failures = Path.glob, [2]

    def racing_glob(self: Path, pattern: str):  # the first walks find a directory gone
        if failures[0]:
            failures[0] -= 1
            raise FileNotFoundError(2, "No such file or directory", str(self / "kc" / "x.main_CxxBuild"))
        return real_glob(self, pattern)

    monkeypatch.setattr(Path, "glob", racing_glob)
    assert artifacts(tmp_path)["fx_graph"] == [entry]
    failures[0] = 10**6
    with pytest.raises(FileNotFoundError, match="main_CxxBuild"):
        artifacts(tmp_path)


def _stats(**counts: int) -> CompileStats:
    return CompileStats(**counts)


def test_the_outcome_is_read_from_torchs_counts_and_reasons_and_a_recompile_is_never_a_warm_start() -> None:
    miss = CacheEvent("fx_graph", "miss", key="fabc")
    failure = CacheEvent("fx_graph", "load_failure", reason="UnpicklingError: pickle data was truncated")
    warm = classify(_stats(fx_graph_cache_hits=5, aot_autograd_cache_hits=5, artifacts_loaded=5), [])
    expect_outcome(warm, "loaded")
    with pytest.raises(OutcomeMismatch, match="expected recompiled, got loaded"):
        expect_outcome(warm, "recompiled")
    recompiled = classify(_stats(fx_graph_cache_misses=1, artifacts_loaded=4, artifacts_saved=1), [failure, miss])
    expect_outcome(recompiled, "recompiled", reason="UnpicklingError")
    with pytest.raises(OutcomeMismatch, match=r"(?s)expected loaded, got recompiled \(compiled 1, .*UnpicklingError"):
        expect_outcome(recompiled, "loaded")  # a recompile reported as a clean warm start fails
    with pytest.raises(OutcomeMismatch, match="no reason matches 'SyntaxError'"):
        expect_outcome(recompiled, "recompiled", reason="SyntaxError")
    silent = classify(_stats(aot_autograd_cache_misses=1, artifacts_loaded=5), [])  # torch counted, logged nothing
    assert silent.kind == "recompiled" and silent.reasons == (
        "torch counted 1 AOT-autograd cache miss(es) more than it logged: reason not logged",
    )
    skipped = classify(_stats(fx_graph_cache_hits=5, artifacts_loaded=5), [failure])  # loaded past a bad entry
    expect_outcome(skipped, "loaded", reason=SKIPPED)
    with pytest.raises(OutcomeMismatch, match="loaded, but not cleanly"):
        expect_outcome(skipped, "loaded")
    engine = classify(
        _stats(artifacts_loaded=0),
        [CacheEvent("vllm", "recompile", reason="Compiling model again due to a load failure")],
    )
    expect_outcome(engine, "recompiled", reason="due to a load failure")
    assert classify(_stats(), []).kind == "empty"


def run_as_torchs_lookup(file_name: str, logger: Any) -> None:
    """Log an unreadable entry from a function named and filed as the lookup of torch's cache ``file_name``."""
    function = "_lookup" if file_name == "autograd_cache.py" else "_lookup_graph"
    source = (
        f"def {function}(logger):\n    try:\n        raise EOFError('Ran out of input')\n    except EOFError:\n"
        "        logger.warning('fx graph cache unable to load compiled graph', exc_info=True)\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"/torch/{file_name}", "exec"), namespace)
    namespace[function](logger)


def test_cache_events_come_from_torchs_log_records_and_an_engines_named_line(caplog: pytest.LogCaptureFixture) -> None:
    """Torch's own messages become events (key or reason); warnings still reach torch's handlers; an engine's
    line becomes a recompile only when it matches its pattern."""
    import logging
    import logging.config

    from pytest_layername.compile.cache_events import LogReason, cache_event_log

    codecache = logging.getLogger("torch._inductor.codecache")
    engine = LogReason("toy", "toy.engine", r"Compiling model again due to a load failure")
    with caplog.at_level(logging.WARNING), cache_event_log([engine]) as events:
        codecache.info("fx graph cache miss for key %s", "fkey")
        codecache.info("Bypassing FX Graph Cache because '%s'", "unsupported op")
        for lookup in ("autograd_cache.py", "codecache.py"):  # torch's one message for either cache's bad entry
            run_as_torchs_lookup(lookup, codecache)
        codecache.warning("fx graph cache unable to load compiled graph")  # no lookup on the stack
        codecache.info("Writing something else")
        logging.getLogger("toy.engine").warning(
            "Compiling model again due to a load failure from %s, reason: %s", "p", "x"
        )
        logging.getLogger("toy.engine").warning("Loaded the compiled model from %s", "p")
        # an engine configuring its logging on import (vLLM's dictConfig) resets its loggers' handlers
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "loggers": {"toy": {}}})
        logging.getLogger("toy.engine").warning("Compiling model again due to a load failure after dictConfig")
    assert events == [
        CacheEvent("fx_graph", "miss", key="fkey"),
        CacheEvent("fx_graph", "bypass", reason="unsupported op"),
        CacheEvent("aot_autograd", "load_failure", reason="EOFError: Ran out of input"),
        CacheEvent("fx_graph", "load_failure", reason="EOFError: Ran out of input"),
        CacheEvent("unattributed", "load_failure", reason="fx graph cache unable to load compiled graph"),
        CacheEvent("toy", "recompile", reason="Compiling model again due to a load failure from p, reason: x"),
        CacheEvent("toy", "recompile", reason="Compiling model again due to a load failure after dictConfig"),
    ]
    assert "fx graph cache unable to load compiled graph" in caplog.text  # the warning was not swallowed
    assert codecache.propagate and not codecache.handlers  # the loggers are as they were


def test_a_failed_starts_reason_is_its_exception_chain_not_torchs_advice() -> None:
    from pytest_layername.compile.cache_faults import error_reason

    output = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:
RuntimeError: Failed to import /cache/mx/cmx.py
SyntaxError: unterminated triple-quoted string literal (detected at line 224) (cmx.py, line 187)

Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace
"""
    assert error_reason(output) == (
        "torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised: / RuntimeError: Failed to import "
        "/cache/mx/cmx.py / SyntaxError: unterminated triple-quoted string literal (detected at line 224) (cmx.py, "
        "line 187)"
    )
    assert error_reason("side 1 start was killed by SIGTERM:\n") == "side 1 start was killed by SIGTERM:"
