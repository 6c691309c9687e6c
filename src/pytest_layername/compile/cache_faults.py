"""Faults injected into starts on a compile cache, and the start after each, judged.

Engine-agnostic: a start is a :class:`StartSpec` (any :func:`~.process_start.start_process` target, its
kwargs, environment and engine adapters), the cache a directory, its artifacts found by a layout (kind ->
glob; :data:`INDUCTOR_LAYOUT` finds torch's FX-graph and AOT-autograd entries at any depth, inside an
engine's cache root too). The faults:

- :func:`kill_when_written`: SIGKILL a start (its process group) once ``after`` artifact files exist,
  watched from this process: the first file, or one mid-way through the writes;
- :func:`start_together`: several starts at once on one directory, each judged;
- :func:`damage_artifact`: truncate, flip bytes, flip one bit of a constant or copy another artifact over
  a chosen one (:class:`ArtifactSelector`: kind and index in write order) before the next start;
- the other mode: the next start is ``spec.changed(kwargs=...)`` or ``spec.changed(env=...)``.

:func:`attempt` runs the next start and judges it (:class:`Attempt`): its outcome (loaded, recompiled with
torch's reasons, empty, or a loud error: :mod:`.start_outcome`) and its output against a ground truth the
caller computes outside the start (a ``truth`` check: None when right, else what differs). A wrong output
fails :meth:`Attempt.expect` whatever the outcome.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .process_start import ProcessStart, ProcessStartError, RunningStart, spawn_process
from .start_outcome import StartOutcome, error_outcome, expect_outcome

#: torch's inductor cache files by kind, as globs below a cache directory (``**``: inside an engine's root too):
#: FX-graph and AOT-autograd cache entries, and the Python module of each compiled graph (PyCodeCache), which
#: a hit on an FX-graph entry runs as found on disk
INDUCTOR_LAYOUT: Mapping[str, str] = {
    "fx_graph": "**/fxgraph/*/*/*",
    "aot_autograd": "**/aotautograd/*/*",
    "output_code": "**/??/c*.py",
}
#: a check of a finished start's output: None when it is the ground truth, else what differs
Truth = Callable[[ProcessStart], str | None]


class FaultNotInjected(RuntimeError):
    """The fault could not be injected (the start finished before the kill, no such artifact, ...)."""


class WrongOutput(AssertionError):
    """A start after a fault gave an output other than the ground truth."""


@dataclass(frozen=True)
class StartSpec:
    """One start: ``target(session, **kwargs)`` in a fresh process with ``env`` and engine adapters ``engines``;
    ``cache_env`` names the engine's own cache-root variables, set to the start's cache directory
    (``("VLLM_CACHE_ROOT",)``: vLLM keeps its compiled model below it); ``warm``: forked from the warm server
    with torch imported where that equals an exec (the reference models' starts; an engine that sets torch's
    environment at import is exec'd)."""

    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    engines: tuple[str, ...] = ()
    cache_env: tuple[str, ...] = ()
    warm: bool = False

    def changed(self, *, kwargs: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> StartSpec:
        """This start with some kwargs or environment changed (the other mode: ``kwargs={"mode": "string"}``
        for the reference models, ``env={"VLLM_USE_LAYERNAME": "0"}`` for vLLM)."""
        return replace(self, kwargs={**self.kwargs, **(kwargs or {})}, env={**self.env, **(env or {})})

    def spawn(self, cache_dir: str | os.PathLike[str], label: str) -> RunningStart:
        """Launch it on ``cache_dir`` without waiting."""
        return spawn_process(
            self.target, self.kwargs, cache_dir=cache_dir, label=label, engines=self.engines, env=self.env,
            cache_env=self.cache_env, warm=self.warm,
        )  # fmt: skip


@dataclass
class Attempt:
    """A start during or after a fault, judged: its outcome and its output against the ground truth."""

    fault: str
    label: str
    outcome: StartOutcome
    start: ProcessStart | None = None  # None when the start failed (outcome "error")
    output_problem: str | None = None  # None: the output is the ground truth (or there is none: an error)
    error: str | None = None  # the failed start's output tail

    @property
    def output(self) -> str:
        """``ground truth``, ``wrong`` or ``none`` (the start failed)."""
        if self.start is None:
            return "none"
        return "wrong" if self.output_problem else "ground truth"

    def expect(self, kind: str, *, reason: str | None = None) -> None:
        """Assert the ground-truth output, then the outcome (``loaded``, ``recompiled``, ``empty``, ``error``;
        ``reason``: a regex one of the outcome's reasons must match)."""
        __tracebackhide__ = True
        if self.output_problem:
            raise WrongOutput(f"{self.fault}: {self.label} start: {self.output_problem} (outcome {self.outcome.kind})")
        expect_outcome(self.outcome, kind, reason=reason, label=f"{self.fault}: {self.label} start")

    def summary(self) -> dict[str, Any]:
        """What the report records (``cache_faults``): the fault, the outcome, the output's verdict."""
        return {
            "fault": self.fault,
            "label": self.label,
            "outcome": self.outcome.as_dict(),
            "output": self.output,
            "output_problem": self.output_problem,
            "seconds": round(self.start.seconds, 3) if self.start else None,
        }


def judge(running: RunningStart, *, fault: str, truth: Truth, timeout: float = 1800) -> Attempt:
    """Wait for ``running`` and judge it; a failed start is outcome ``error``, its exception chain the reason."""
    try:
        start = running.finish(timeout)
    except ProcessStartError as failed:
        return Attempt(fault, running.label, error_outcome(error_reason(str(failed))), error=str(failed)[-4000:])
    return judge_start(start, fault=fault, truth=truth)


def judge_start(start: ProcessStart, *, fault: str, truth: Truth) -> Attempt:
    """A finished start judged: its outcome, and its output against ``truth`` (a start several tests share)."""
    return Attempt(fault, start.label, start.outcome, start, truth(start))


#: a traceback's exception line: ``torch._dynamo.exc.BackendCompilerFailed: ...``, ``SyntaxError: ...``
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt|Exit)\b:?.*")


def error_reason(output: str) -> str:
    """The exception lines of a failed start's output (the chain, outermost first), else its last line."""
    found = [line.strip()[:300] for line in output.splitlines() if EXCEPTION_LINE.match(line)]
    if found:
        return " / ".join(dict.fromkeys(found[-3:]))
    return next((line.strip() for line in reversed(output.splitlines()) if line.strip()), output)


def attempt(
    spec: StartSpec, cache_dir: str | os.PathLike[str], *, fault: str, truth: Truth, label: str = "next",
    timeout: float = 1800,
) -> Attempt:  # fmt: skip
    """Run the start after ``fault`` on ``cache_dir`` and judge it."""
    return judge(spec.spawn(cache_dir, label), fault=fault, truth=truth, timeout=timeout)


def start_together(
    specs: Sequence[StartSpec], cache_dir: str | os.PathLike[str], *, truth: Truth, fault: str = "concurrent",
    timeout: float = 1800,
) -> list[Attempt]:  # fmt: skip
    """Launch every spec at once on ``cache_dir``, then judge each (labels ``side 1``, ``side 2``, ...)."""
    running = [spec.spawn(cache_dir, f"side {index}") for index, spec in enumerate(specs, 1)]
    judged: list[Attempt] = []
    try:
        for one in running:
            judged.append(judge(one, fault=fault, truth=truth, timeout=timeout))
    finally:
        for one in running[len(judged) :]:  # an interrupted wait leaves none of them running
            one.kill()
    return judged


#: Listings of a cache a start is writing, tried before giving up (a directory it removes mid-walk fails one).
LISTING_TRIES = 20


def artifacts(cache_dir: str | os.PathLike[str], layout: Mapping[str, str] = INDUCTOR_LAYOUT) -> dict[str, list[Path]]:
    """Each kind's artifact files under ``cache_dir``, in write order (modification time, then path); files
    whose name starts with a dot (torch's atomic-write temporaries) are not artifacts. A listing that races
    with a start writing the cache (inductor's build directories come and go) is taken again."""
    root = Path(cache_dir)
    found = {}
    for kind, pattern in layout.items():
        for tries_left in range(LISTING_TRIES - 1, -1, -1):
            try:
                stamped = [(p.stat().st_mtime_ns, str(p), p) for p in root.glob(pattern) if _artifact_file(p)]
                break
            except FileNotFoundError:  # removed while the walk or stat reached it
                if not tries_left:
                    raise
        found[kind] = [p for _, _, p in sorted(stamped)]
    return found


def _artifact_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.is_file()


def clone_cache(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """A copy of a cache directory, modification times kept (one cold start serving several faults)."""
    return Path(shutil.copytree(source, destination, copy_function=shutil.copy2))


@dataclass(frozen=True)
class Killed:
    """A start killed while it wrote its artifacts."""

    label: str
    after: int  # artifact files the kill waited for
    files: int  # artifact files in the cache once the child was dead
    seconds: float  # from launch to the kill
    returncode: int


def kill_when_written(
    spec: StartSpec, cache_dir: str | os.PathLike[str], *, after: int = 1,
    layout: Mapping[str, str] = INDUCTOR_LAYOUT, label: str = "killed", poll: float = 0.01, timeout: float = 1800,
) -> Killed:  # fmt: skip
    """Start ``spec`` and SIGKILL it (its process group) as soon as ``after`` artifact files exist in the cache.

    Raises :class:`FaultNotInjected` when the start exits first (it wrote fewer files: nothing was interrupted).
    """
    if after < 1:
        raise ValueError(f"after must be at least 1, got {after}")
    running = spec.spawn(cache_dir, label)
    deadline = running.launched + timeout
    try:
        while sum(len(files) for files in artifacts(cache_dir, layout).values()) < after:
            if running.process.poll() is not None or time.perf_counter() > deadline:
                written = sum(len(files) for files in artifacts(cache_dir, layout).values())
                raise FaultNotInjected(
                    f"{label} start exited ({running.process.returncode}) or timed out with {written} artifact "
                    f"file(s), before {after}"
                )
            time.sleep(poll)
        seconds = time.perf_counter() - running.launched
    finally:
        returncode = running.kill()
    files = sum(len(found) for found in artifacts(cache_dir, layout).values())
    return Killed(label, after, files, seconds, returncode)


@dataclass(frozen=True)
class ArtifactSelector:
    """One artifact: its kind (a layout key: ``fx_graph``, ``aot_autograd``) and index in write order
    (negative: from the newest)."""

    kind: str
    index: int = 0

    def path(self, cache_dir: str | os.PathLike[str], layout: Mapping[str, str] = INDUCTOR_LAYOUT) -> Path:
        if self.kind not in layout:
            raise FaultNotInjected(f"no artifact kind {self.kind!r}; the layout has {', '.join(layout)}")
        files = artifacts(cache_dir, layout)[self.kind]
        if not -len(files) <= self.index < len(files):
            raise FaultNotInjected(f"{self.kind}[{self.index}]: {cache_dir} holds {len(files)} {self.kind} artifact(s)")
        return files[self.index]

    def __str__(self) -> str:
        return f"{self.kind}[{self.index}]"


class Damage(Protocol):
    """A change to an artifact's bytes; ``read`` gives another artifact's bytes."""

    def apply(self, data: bytes, read: Callable[[ArtifactSelector], bytes]) -> bytes: ...


@dataclass(frozen=True)
class Truncate:
    """Keep the first ``keep`` fraction of the file (a write cut short)."""

    keep: float = 0.5

    def apply(self, data: bytes, read: Callable[[ArtifactSelector], bytes]) -> bytes:
        return data[: int(len(data) * self.keep)]


@dataclass(frozen=True)
class FlipBytes:
    """Invert ``count`` bytes from the ``at`` fraction of the file on (garbage in the middle)."""

    at: float = 0.5
    count: int = 8

    def apply(self, data: bytes, read: Callable[[ArtifactSelector], bytes]) -> bytes:
        start = int(len(data) * self.at)
        flipped = bytes(b ^ 0xFF for b in data[start : start + self.count])
        return data[:start] + flipped + data[start + len(flipped) :]


@dataclass(frozen=True)
class FlipBit:
    """Flip ``mask``'s bits of the byte ``offset`` bytes into the first ``pattern`` (a tampered constant:
    ``FlipBit(b"model.layers.1.", 13, 0x02)`` turns a baked ``model.layers.1`` into ``model.layers.3``);
    ``every``: into every occurrence (a constant renamed consistently throughout an artifact that also
    holds the graph it was compiled from, as an engine's saved model does)."""

    pattern: bytes
    offset: int
    mask: int = 0x01
    every: bool = False

    def apply(self, data: bytes, read: Callable[[ArtifactSelector], bytes]) -> bytes:
        found = [m.start() for m in re.finditer(re.escape(self.pattern), data)]
        if not found:
            raise FaultNotInjected(f"the artifact holds no {self.pattern!r}")
        changed = bytearray(data)
        for start in found if self.every else found[:1]:
            changed[start + self.offset] ^= self.mask
        return bytes(changed)


@dataclass(frozen=True)
class CopyFrom:
    """Another artifact's bytes in place of this one's (another layer's piece, under this piece's key)."""

    source: ArtifactSelector

    def apply(self, data: bytes, read: Callable[[ArtifactSelector], bytes]) -> bytes:
        return read(self.source)


@dataclass(frozen=True)
class Damaged:
    """What :func:`damage_artifact` did."""

    selector: str
    path: str
    damage: str
    size_before: int
    size_after: int


def damage_artifact(
    cache_dir: str | os.PathLike[str], selector: ArtifactSelector, damage: Damage,
    layout: Mapping[str, str] = INDUCTOR_LAYOUT,
) -> Damaged:  # fmt: skip
    """Apply ``damage`` to the selected artifact, keeping its modification time (so write order stays)."""
    path = selector.path(cache_dir, layout)
    before = path.read_bytes()
    after = damage.apply(before, lambda other: other.path(cache_dir, layout).read_bytes())
    if after == before:
        raise FaultNotInjected(f"{damage} leaves {selector} unchanged")
    status = path.stat()
    path.write_bytes(after)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    return Damaged(str(selector), str(path), repr(damage), len(before), len(after))
