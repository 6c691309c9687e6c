"""Known torch bugs: expected failures by torch version range, each tied to a torch issue or PR.

A test a bug covers runs as a *strict* expected failure on the torch versions in the bug's range (and only on
its device, when it names one): it must still fail, and for the reason the bug names (``match``, a regular
expression searched in the failure text). A test that passes there, or fails for another reason, fails the
run, so a fixed bug or a new failure is never hidden: when torch fixes the bug, the cell fails until the range
is narrowed. Never widen a range to make a cell green. Matrix cells list the ids they expect (``known_bugs``
in ``matrix.toml``), and the gate checks the list.

The registry is ``known_bugs.toml`` in this package. Needs no torch.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import sys
from dataclasses import dataclass
from importlib import resources

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .provenance import digest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REGISTRY_FILE = "known_bugs.toml"
#: a registry entry's fields (``[bugs.<id>]``) and what each means (shown in ``docs/reference/known-bugs.md``)
FIELDS = {
    "url": "torch issue or PR, or the source line that raises",
    "summary": "one line",
    "torch": "version specifier of the torch versions that have the bug (pre-releases and local tags included)",
    "tests": 'fnmatch patterns of the node ids it breaks (`"[[]"` matches a literal `"["`)',
    "match": "regular expression searched in the exception (`Type: message`; never the traceback's source)",
    "device": '`"cpu"` or `"cuda"` when the bug is specific to one',
}
REQUIRED = set(FIELDS) - {"device"}


class KnownBugError(ValueError):
    """A registry entry that is malformed."""


@dataclass(frozen=True)
class KnownBug:
    """One torch bug: where it is reported, which torch versions have it, which tests it breaks and how."""

    id: str
    url: str
    summary: str
    torch: SpecifierSet
    tests: tuple[str, ...]  # fnmatch patterns of test node ids (mode parameter included)
    match: str  # regular expression the failure text must contain
    device: str | None = None  # "cpu" or "cuda" when the bug is specific to one
    digest: str = ""  # sha256 of its registry entry: a cell's digest covers the bugs it lists

    def applies(self, torch_version: str, device: str) -> bool:
        """Whether this torch (local tags and pre-releases included) and device have the bug."""
        in_range = self.torch.contains(Version(torch_version), prereleases=True)
        return in_range and self.device in (None, device)

    def covers(self, nodeid: str) -> bool:
        return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in self.tests)

    def explains(self, failure_text: str) -> bool:
        return re.search(self.match, failure_text) is not None

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "url": self.url, "summary": self.summary, "torch": str(self.torch)}


def parse_registry(text: str, source: str = REGISTRY_FILE) -> dict[str, KnownBug]:
    """Validate a registry's TOML text; every problem names the source and the bug."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise KnownBugError(f"{source}: not valid TOML: {error}") from error
    bugs = {}
    for bug_id, entry in data.get("bugs", {}).items():
        where = f"{source}: [bugs.{bug_id}]"
        if not isinstance(entry, dict):
            raise KnownBugError(f"{where} is not a table")
        if unknown := sorted(set(entry) - set(FIELDS)):
            raise KnownBugError(f"{where}: unknown field(s) {', '.join(unknown)}")
        if missing := sorted(REQUIRED - set(entry)):
            raise KnownBugError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            spec = SpecifierSet(entry["torch"])
            re.compile(entry["match"])
        except (InvalidSpecifier, re.error) as error:
            raise KnownBugError(f"{where}: {error}") from error
        if not spec or not entry["tests"] or not all(isinstance(t, str) for t in entry["tests"]):
            raise KnownBugError(f"{where}: needs a non-empty torch range and a list of test patterns")
        if entry.get("device") not in (None, "cpu", "cuda"):
            raise KnownBugError(f"{where}: device must be 'cpu' or 'cuda'")
        bugs[bug_id] = KnownBug(
            bug_id,
            entry["url"],
            entry["summary"],
            spec,
            tuple(entry["tests"]),
            entry["match"],
            entry.get("device"),
            digest(entry),
        )
    return bugs


@functools.cache
def registry() -> dict[str, KnownBug]:
    """The bugs in this package's ``known_bugs.toml``."""
    return parse_registry(resources.files(__package__).joinpath(REGISTRY_FILE).read_text(encoding="utf-8"))


def active_bugs(torch_version: str, device: str) -> list[KnownBug]:
    """The registered bugs this torch and device have."""
    try:
        Version(torch_version)
    except InvalidVersion as error:
        raise KnownBugError(f"torch version {torch_version!r} is not a version") from error
    return [bug for bug in registry().values() if bug.applies(torch_version, device)]
