"""The compatibility matrix: load and validate ``matrix.toml`` cells, export them for CI.

Each ``[cells.<name>]`` table is one cell: a torch version spec, the layer-name mode that torch must
detect, a device, a tier, optional install options and budgets. Every problem is a :class:`MatrixError`
naming the file, the cell and the field. A cell's :attr:`Cell.digest` pins its table (and the known bugs
it lists) to the reports made for it: the gate accepts a report only for the definition it was run with.

This module needs only the standard library and ``packaging`` (no torch): ``noxfile.py`` and the gate
import it in an environment without torch. Cells' ``known_bugs`` are checked against :mod:`.known_bugs`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ..core.names import REFERENCE_IMPL
from .inputs import InputError, read_json, read_text, short
from .known_bugs import registry
from .provenance import digest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: the first torch with hoisted value opaque types: string mode below it, opaque from it
OPAQUE_MIN_VERSION = Version("2.11")
EXPECTED_MODES = ("string", "opaque")
DEVICES = ("cpu", "cuda")
DEFAULT_MATRIX = "matrix.toml"
DEFAULT_REPORTS_DIR = "reports"
#: A cell name: it becomes file names (``reports/<name>.json``) and nox session names, so a safe, short set.
CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
IMPL_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: The largest matrix file and skip marker read.
MAX_MATRIX_BYTES = 2**20
MAX_MARKER_BYTES = 64 * 2**10

#: A cell's fields (``[cells.<name>]``) and what each means: the validator below checks them, the reference page
#: ``docs/reference/matrix-toml.md`` shows them (``layername docs``).
CELL_FIELDS = {
    "torch": 'version specifier installed as `torch<spec>` (e.g. `"==2.10.0"`); must not admit versions both '
    "below and from 2.11",
    "expected_mode": 'the mode `auto` must detect: `"string"` below torch 2.11 (plain-str fallback), '
    '`"opaque"` from 2.11 (hoisted LayerName)',
    "device": '`"cpu"` (GPUs hidden with `CUDA_VISIBLE_DEVICES=""`) or `"cuda"` (skipped, with a skip '
    "marker, on a machine without a GPU); the suite runs with `--layername-device=<device>`",
    "tier": 'any name; this project uses `"ci"` (every change, CPU), `"full"` (every release, CPU) and '
    '`"gpu"` (every release, CUDA). `nox -t <tier>` and `layername gate --tier` select by it',
    "budgets": "the summary budgets (table below) and one table per mode the cell runs, `budgets.<mode>`, of "
    "stat budgets: maxima over the `budget_tests` run in that mode",
    "modes": 'the modes the suite runs (default `[expected_mode]`); from 2.11 on `["opaque", "string"]`: the '
    "string fallback stays supported there (an engine's `VLLM_USE_LAYERNAME=0` switch)",
    "budget_tests": 'fnmatch patterns of test node ids the stat budgets apply to (default `["*"]`); a stat '
    "budget that no matching test recorded fails the gate",
    "known_bugs": "ids from `known_bugs.toml` this cell's torch must hit: those tests run as strict expected "
    "failures; a bug hit but not listed, or listed but not hit, fails the gate",
    "install": 'how uv/pip finds that torch: a table of the install fields below, or `"preinstalled"`: install '
    "nothing, use (and check) the environment's own torch. `PIP_FIND_LINKS` from the environment is honoured "
    "too (passed to uv as `--find-links`)",
    "impl": "the implementation module the suite runs against (default the bundled `pytest_layername.core.reference`);"
    " the gate fails a report of another implementation",
    "allow_unhoisted": "`true`: an unhoisted LayerName skips opaque-mode tests instead of failing them "
    "(`--layername-allow-unhoisted`); without it the gate fails a report that allowed it",
    "pytest_args": 'extra arguments for pytest (e.g. `["-n", "2"]`); a `-k`, `-m` or `--deselect` here defines '
    "the cell's own subset (the gate accepts that deselection and no other)",
    "description": "free text",
}
REQUIRED_FIELDS = ("torch", "expected_mode", "device", "tier", "budgets")
#: pytest options with which a cell's own ``pytest_args`` choose a subset of the suite (the gate accepts the
#: deselection they cause; nothing else may deselect)
SELECTING_OPTIONS = ("-k", "-m", "--deselect")
#: ``install = { ... }``: installer options (understood by both ``pip install`` and ``uv pip install``)
INSTALL_FIELDS = {
    "index_url": "`--index-url`: the index torch comes from (for CPU-only machines "
    "`https://download.pytorch.org/whl/cpu`; PyPI's torch wheels are CUDA builds of about 7 GB that also run on "
    "CPU)",
    "extra_index_urls": '`--extra-index-url` for each (e.g. `["https://pypi.org/simple"]` next to that index_url)',
    "find_links": "`--find-links` for each: folders or pages of wheels",
    "pre": "`true`: `--pre` (pre-release torch)",
}
#: ``install = "preinstalled"``: use the torch already in the environment (GPU images, vendor containers).
PREINSTALLED = "preinstalled"
#: Per-cell limits on the report's summary.
SUMMARY_BUDGETS = {
    "max_failed": "required: the most failed or errored tests allowed (e.g. 0)",
    "min_passed": "the fewest passed tests accepted (default 1)",
    "max_skipped": "the skips this cell legitimately has (CUDA-only tests on CPU, opaque-only tests below 2.11, "
    "checks of APIs a torch lacks), counted from a full run: a new skip fails the gate",
}
#: Per-mode maxima (``budgets.<mode>``) over ``stats`` of the ``budget_tests`` run in that mode.
STAT_BUDGETS = {
    "max_pieces": "pieces of the split graph the inner compiler got",
    "max_unique_pieces": "distinct structural hashes among them",
    "max_backend_compilations": "times the piecewise backend ran its inner compiler",
    "max_inductor_compiles": "inductor compiles: FX-graph-cache misses plus bypasses",
    "max_recompiles": "Dynamo recompiles",
    "max_dynamo_frames": "frames Dynamo compiled",
    "max_hash_disagreements": "pieces where the structural hash and torch's FX-graph cache disagree (0: they "
    "must agree on every piece)",
}


class MatrixError(ValueError):
    """A matrix file that is missing, unreadable or invalid."""


@dataclass(frozen=True)
class Install:
    """How to install a cell's torch (pip/uv options); empty means the default index."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    pre: bool = False
    preinstalled: bool = False  # install nothing: check the environment's own torch against the spec

    def options(self) -> list[str]:
        """Installer command-line options (understood by both ``pip install`` and ``uv pip install``)."""
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        if self.pre:
            args.append("--pre")
        return args


@dataclass(frozen=True)
class Cell:
    """One matrix cell: which torch, which mode it must detect, on which device, within which budgets."""

    name: str
    torch: SpecifierSet
    expected_mode: str
    device: str
    tier: str
    budgets: dict[str, int]  # summary budgets (max_failed, min_passed, max_skipped)
    mode_budgets: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> stat budgets
    modes: tuple[str, ...] = ()  # the modes the suite runs; default (expected_mode,)
    install: Install = field(default_factory=Install)
    budget_tests: tuple[str, ...] = ("*",)
    known_bugs: tuple[str, ...] = ()  # ids of known_bugs.toml this cell's torch must hit
    impl: str = REFERENCE_IMPL  # the implementation module the suite runs against
    allow_unhoisted: bool = False  # an unhoisted LayerName skips opaque-mode tests instead of failing them
    pytest_args: tuple[str, ...] = ()
    description: str = ""
    digest: str = ""  # sha256 of the cell's table and of the known_bugs.toml entries it lists

    @property
    def selects(self) -> bool:
        """Whether the cell's own ``pytest_args`` choose a subset (``-k``, ``-m``, ``--deselect``)."""
        return any(arg.split("=", 1)[0] in SELECTING_OPTIONS for arg in self.pytest_args)

    @property
    def run_modes(self) -> tuple[str, ...]:
        """The modes the cell's suite runs (``--layername-mode=both`` when two)."""
        return self.modes or (self.expected_mode,)

    @property
    def mode_option(self) -> str:
        """``--layername-mode`` for this cell: ``both``, or the one mode."""
        return "both" if len(self.run_modes) > 1 else self.run_modes[0]

    @property
    def requirement(self) -> str:
        """The pip requirement installing this cell's torch, e.g. ``torch==2.10.0``."""
        return f"torch{self.torch}"

    @property
    def keyword(self) -> str:
        """The name as an identifier (``cpu_torch2_10``), usable in ``nox -k``/``-t`` expressions."""
        return re.sub(r"\W", "_", self.name)

    @property
    def max_failed(self) -> int:
        return self.budgets.get("max_failed", 0)

    @property
    def min_passed(self) -> int:
        return self.budgets.get("min_passed", 1)

    @property
    def max_skipped(self) -> int | None:
        return self.budgets.get("max_skipped")

    def budgeted(self, nodeid: str) -> bool:
        """Whether the stat budgets apply to the test ``nodeid`` (it matches a ``budget_tests`` pattern)."""
        return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in self.budget_tests)

    def stat_budgets(self, mode: str) -> dict[str, int]:
        """``{stat name: maximum}`` for the stat budgets of ``mode`` (e.g. ``{"unique_pieces": 3}``)."""
        return {key.removeprefix("max_"): value for key, value in self.mode_budgets.get(mode, {}).items()}

    def allows(self, torch_version: str) -> bool:
        """Whether ``torch_version`` (local tags such as ``+cpu`` allowed) satisfies this cell's spec."""
        return self.torch.contains(Version(torch_version), prereleases=True)

    def report_path(self, reports_dir: str | os.PathLike[str]) -> Path:
        return Path(reports_dir) / f"{self.name}.json"

    def junit_path(self, reports_dir: str | os.PathLike[str]) -> Path:
        return Path(reports_dir) / f"{self.name}.xml"

    def skip_marker_path(self, reports_dir: str | os.PathLike[str]) -> Path:
        return Path(reports_dir) / f"{self.name}.skipped.json"

    def as_github(self) -> dict[str, Any]:
        """This cell as one ``include`` entry of a GitHub Actions matrix."""
        return {
            "cell": self.name,
            "torch": str(self.torch),
            "expected_mode": self.expected_mode,
            "modes": list(self.run_modes),
            "device": self.device,
            "tier": self.tier,
            "session": f"matrix({self.name})",
        }


@dataclass(frozen=True)
class Matrix:
    """The cells of one matrix file, in file order."""

    path: Path
    cells: tuple[Cell, ...]

    @property
    def tiers(self) -> list[str]:
        return list(dict.fromkeys(cell.tier for cell in self.cells))

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise MatrixError(f"{self.path}: no cell named {short(name)}; cells: {', '.join(c.name for c in self.cells)}")

    def select(self, tiers: Iterable[str] = (), names: Iterable[str] = ()) -> list[Cell]:
        """Cells in any of ``tiers`` or named in ``names``; all cells when both are empty."""
        tiers, names = list(tiers), list(names)
        for tier in tiers:
            if tier not in self.tiers:
                raise MatrixError(f"{self.path}: no cell has tier {tier!r}; tiers: {', '.join(self.tiers)}")
        chosen = {self.cell(name).name for name in names}
        if not tiers and not names:
            return list(self.cells)
        return [c for c in self.cells if c.tier in tiers or c.name in chosen]

    def github_matrix(self, tiers: Iterable[str] = (), names: Iterable[str] = ()) -> dict[str, Any]:
        """A GitHub Actions ``strategy.matrix`` (``{"include": [...]}``) of the selected cells."""
        return {"include": [cell.as_github() for cell in self.select(tiers, names)]}


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    # bool is an int subclass; a budget of ``true`` is a mistake, not 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise MatrixError(f"{where}: {what} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise MatrixError(f"{where}: {what} must be {_kind_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _unknown(table: dict[str, Any], allowed: Sequence[str], where: str, what: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise MatrixError(f"{where}: unknown {what} {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")


def _string_list(value: Any, where: str, what: str) -> tuple[str, ...]:
    _expect(value, list, where, what)
    for item in value:
        _expect(item, str, where, f"each entry of {what}")
    return tuple(value)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    patterns = _string_list(value, where, "budget_tests")
    if not patterns or not all(patterns):
        raise MatrixError(f"{where}: budget_tests must list non-empty nodeid patterns (fnmatch), e.g. ['*::test_x*']")
    return patterns


def mode_for_spec(spec: SpecifierSet, where: str) -> str:
    """The mode every torch in ``spec`` must detect; a spec straddling 2.11 is an error."""
    boundary_below = Version(f"{OPAQUE_MIN_VERSION.major}.{OPAQUE_MIN_VERSION.minor - 1}.9999")
    candidates = {OPAQUE_MIN_VERSION, boundary_below}
    for clause in spec:
        try:
            candidates.add(Version(clause.version.removesuffix(".*")))
        except ValueError:  # '===' arbitrary strings
            continue
    admitted = [v for v in candidates if spec.contains(v, prereleases=True)]
    modes = {"opaque" if v.release >= OPAQUE_MIN_VERSION.release else "string" for v in admitted}
    if len(modes) > 1:
        raise MatrixError(
            f"{where}: torch {str(spec)!r} admits versions both below and from {OPAQUE_MIN_VERSION}, which need "
            "different modes; split it into one cell below and one from that version"
        )
    if not modes:
        raise MatrixError(f"{where}: torch {str(spec)!r} admits no version this check can place; pin it (==X.Y.Z)")
    return modes.pop()


def _parse_install(value: Any, where: str) -> Install:
    if value == PREINSTALLED:
        return Install(preinstalled=True)
    if isinstance(value, str):
        raise MatrixError(f"{where}: install must be a table of {', '.join(INSTALL_FIELDS)} or {PREINSTALLED!r}")
    _expect(value, dict, where, "install")
    _unknown(value, tuple(INSTALL_FIELDS), where, "install key")
    index_url = value.get("index_url")
    if index_url is not None:
        _expect(index_url, str, where, "install.index_url")
    pre = value.get("pre", False)
    _expect(pre, bool, where, "install.pre")
    return Install(
        index_url=index_url,
        extra_index_urls=_string_list(value.get("extra_index_urls", []), where, "install.extra_index_urls"),
        find_links=_string_list(value.get("find_links", []), where, "install.find_links"),
        pre=pre,
    )


def _limits(table: dict[str, Any], allowed: Sequence[str], where: str, prefix: str) -> dict[str, int]:
    _unknown(table, allowed, where, "budget")
    for key, limit in table.items():
        if _expect(limit, int, where, f"{prefix}.{key}") < 0:
            raise MatrixError(f"{where}: {prefix}.{key} must be >= 0, got {limit}")
    return dict(table)


def _parse_budgets(value: Any, modes: Sequence[str], where: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Summary budgets, and one table of stat budgets per mode the cell runs (``budgets.opaque`` ...)."""
    _expect(value, dict, where, "budgets")
    summary = {k: v for k, v in value.items() if k not in EXPECTED_MODES}
    if misplaced := sorted(set(summary) & set(STAT_BUDGETS)):
        raise MatrixError(
            f"{where}: {', '.join(misplaced)} must sit in a per-mode table, e.g. budgets.{modes[0]} = "
            f"{{ {misplaced[0]} = ... }} (each mode the cell runs has its own stat budgets)"
        )
    summary = _limits(summary, tuple(SUMMARY_BUDGETS), where, "budgets")
    if "max_failed" not in summary:
        raise MatrixError(f"{where}: budgets lacks 'max_failed' (the most failed or errored tests allowed, e.g. 0)")
    per_mode = {}
    for mode in EXPECTED_MODES:
        if mode in value:
            if mode not in modes:
                raise MatrixError(f"{where}: budgets.{mode} is set but the cell does not run {mode} mode")
            table = _expect(value[mode], dict, where, f"budgets.{mode}")
            per_mode[mode] = _limits(table, tuple(STAT_BUDGETS), where, f"budgets.{mode}")
    if missing := [mode for mode in modes if mode not in per_mode]:
        raise MatrixError(
            f"{where}: no stat budgets for mode(s) {', '.join(missing)}: add budgets.{missing[0]} = {{...}}"
        )
    return summary, per_mode


def _parse_modes(value: Any, expected_mode: str, where: str) -> tuple[str, ...]:
    modes = _string_list(value, where, "modes")
    if unknown := [m for m in modes if m not in EXPECTED_MODES]:
        raise MatrixError(f"{where}: modes {unknown} are not among {', '.join(EXPECTED_MODES)}")
    if len(set(modes)) != len(modes) or expected_mode not in modes:
        raise MatrixError(f"{where}: modes must list distinct modes including expected_mode {expected_mode!r}")
    if expected_mode == "string" and "opaque" in modes:
        raise MatrixError(f"{where}: torch below {OPAQUE_MIN_VERSION} cannot run opaque mode")
    return tuple(m for m in ("opaque", "string") if m in modes)  # the order --layername-mode=both runs


def _parse_known_bugs(value: Any, spec: SpecifierSet, device: str, where: str) -> tuple[str, ...]:
    ids = _string_list(value, where, "known_bugs")
    bugs = registry()
    for bug_id in ids:
        if bug_id not in bugs:
            raise MatrixError(f"{where}: known_bugs names {bug_id!r}, which known_bugs.toml does not define")
        bug = bugs[bug_id]
        pinned = [Version(c.version) for c in spec if c.operator == "==" and "*" not in c.version]
        if pinned and not bug.applies(str(pinned[0]), device):
            on = f" on {bug.device}" if bug.device else ""
            raise MatrixError(f"{where}: known bug {bug_id!r} is for torch {bug.torch}{on}, not {spec} on {device}")
    return ids


def _parse_impl(value: Any, where: str) -> str:
    impl = _expect(value, str, where, "impl")
    if not IMPL_NAME.fullmatch(impl):
        raise MatrixError(f"{where}: impl {short(impl)} is not a dotted module name (e.g. 'vllm.utils.torch_utils')")
    return impl


def cell_digest(name: str, table: dict[str, Any], known_bugs: Sequence[str]) -> str:
    """The digest a report of cell ``name`` must carry: its table and the registry entries of its known bugs."""
    bugs = registry()
    return digest({"cell": name, "table": table, "known_bugs": {bug: bugs[bug].digest for bug in known_bugs}})


def parse_cell(name: str, table: Any, where: str) -> Cell:
    """Validate one ``[cells.<name>]`` table into a :class:`Cell`."""
    _expect(table, dict, where, "the cell")
    _unknown(table, tuple(CELL_FIELDS), where, "key")
    for key in REQUIRED_FIELDS:
        if key not in table:
            raise MatrixError(f"{where}: missing required field {key!r}")
    spec_text = _expect(table["torch"], str, where, "torch")
    try:
        spec = SpecifierSet(spec_text)
    except InvalidSpecifier as error:
        raise MatrixError(
            f"{where}: torch {spec_text!r} is not a version specifier (e.g. '==2.10.0'): {error}"
        ) from None
    if not str(spec):
        raise MatrixError(f"{where}: torch must not be empty; pin a version such as '==2.10.0'")
    mode = _expect(table["expected_mode"], str, where, "expected_mode")
    if mode not in EXPECTED_MODES:
        raise MatrixError(f"{where}: expected_mode {mode!r} is not one of {', '.join(EXPECTED_MODES)}")
    must = mode_for_spec(spec, where)
    if mode != must:
        raise MatrixError(
            f"{where}: expected_mode is {mode!r} but torch {spec_text!r} must run {must!r} "
            f"(string below {OPAQUE_MIN_VERSION}, opaque from it)"
        )
    device = _expect(table["device"], str, where, "device")
    if device not in DEVICES:
        raise MatrixError(f"{where}: device {device!r} is not one of {', '.join(DEVICES)}")
    tier = _expect(table["tier"], str, where, "tier")
    if not tier:
        raise MatrixError(f"{where}: tier must not be empty")
    modes = _parse_modes(table.get("modes", [mode]), mode, where)
    summary, per_mode = _parse_budgets(table["budgets"], modes, where)
    known_bugs = _parse_known_bugs(table.get("known_bugs", []), spec, device, where)
    return Cell(
        name=name,
        torch=spec,
        expected_mode=mode,
        device=device,
        tier=tier,
        budgets=summary,
        mode_budgets=per_mode,
        modes=modes,
        install=_parse_install(table.get("install", {}), where),
        budget_tests=_patterns(table.get("budget_tests", ["*"]), where),
        known_bugs=known_bugs,
        impl=_parse_impl(table.get("impl", REFERENCE_IMPL), where),
        allow_unhoisted=_expect(table.get("allow_unhoisted", False), bool, where, "allow_unhoisted"),
        pytest_args=_string_list(table.get("pytest_args", []), where, "pytest_args"),
        description=_expect(table.get("description", ""), str, where, "description"),
        digest=cell_digest(name, table, known_bugs),
    )


def parse_matrix(data: dict[str, Any], path: str | os.PathLike[str]) -> Matrix:
    """Validate the parsed TOML of a matrix file."""
    source = Path(path)
    _unknown(data, ("cells",), str(source), "top-level key")
    cells = data.get("cells")
    if not isinstance(cells, dict) or not cells:
        raise MatrixError(f"{source}: no cells; add at least one [cells.<name>] table")
    parsed = []
    for name, table in cells.items():
        where = f"{source}: cell {short(name)}"
        if not CELL_NAME.fullmatch(name):
            raise MatrixError(
                f"{where}: a cell name may not be empty or longer than 64 characters, and may hold only letters, "
                "digits, '.', '_', '+' and '-', starting with a letter or digit (it names files and nox sessions)"
            )
        parsed.append(parse_cell(name, table, where))
    return Matrix(path=source, cells=tuple(parsed))


def load_matrix(path: str | os.PathLike[str] = DEFAULT_MATRIX) -> Matrix:
    """Read and validate a matrix file; every problem is a :class:`MatrixError` naming the file."""
    source = Path(path)
    try:
        text = read_text(source, "matrix file", MAX_MATRIX_BYTES, "pass --matrix PATH")
    except InputError as error:
        raise MatrixError(str(error)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MatrixError(f"matrix file {source} is not valid TOML: {error}") from None
    except RecursionError:
        raise MatrixError(f"matrix file {source} is not valid TOML: nested too deeply") from None
    return parse_matrix(data, source)


def write_skip_marker(cell: Cell, reports_dir: str | os.PathLike[str], reason: str) -> Path:
    """Leave ``<cell>.skipped.json`` saying why ``cell`` did not run, so the gate shows a skip, not a pass."""
    path = cell.skip_marker_path(reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"cell": cell.name, "device": cell.device, "reason": reason}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_skip_marker(path: str | os.PathLike[str], cell_name: str | None = None) -> str:
    """The reason recorded in a skip marker (of ``cell_name``, when given); :class:`MatrixError` otherwise."""
    try:
        marker = read_json(path, "skip marker", MAX_MARKER_BYTES)
    except InputError as error:
        raise MatrixError(str(error)) from None
    if not isinstance(marker, dict) or not isinstance(marker.get("reason"), str):
        raise MatrixError(f"skip marker {path} is unreadable: not an object with a 'reason' string")
    if cell_name is not None and marker.get("cell") != cell_name:
        raise MatrixError(f"skip marker {path} is of cell {short(marker.get('cell'))}, not {cell_name!r}")
    return marker["reason"]


def device_available(device: str) -> tuple[bool, str]:
    """Whether this machine has ``device``, judged without torch (``nvidia-smi -L`` lists a GPU for cuda)."""
    if device == "cpu":
        return True, "cpu is always present"
    if device != "cuda":
        return False, f"unknown device {device!r}"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no cuda: nvidia-smi is not on PATH (no NVIDIA driver on this machine)"
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"no cuda: nvidia-smi -L failed: {error}"
    if listing.returncode != 0 or "GPU" not in listing.stdout:
        return False, f"no cuda: nvidia-smi -L lists no GPU (exit {listing.returncode}): {listing.stderr.strip()}"
    return True, listing.stdout.strip().splitlines()[0]
