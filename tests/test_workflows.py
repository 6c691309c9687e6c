"""The GitHub workflows: pinned actions with their versions, pinned tools, the pytest range that CI tests.

zizmor (inside ``nox -s lint``) checks their security; these tests check what it does not: the version comment
beside each pinned commit, the pins of what the workflows install, that ci.yml's lowest pytest is pyproject's
floor, the condition that matrix.yml's one zizmor suppression relies on, and each workflow's top-level
``permissions: {}`` and cancelling of superseded pull-request runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from pytest_layername.release.matrix import tomllib

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
REQUIREMENTS = ROOT / ".github" / "requirements"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s+v\d+\.\d+\.\d+$")


def badly_pinned_uses(text: str) -> list[str]:
    """``uses:`` lines not pinned to a full commit with its version in a comment (``# vX.Y.Z``)."""
    bad = []
    for line in text.splitlines():
        match = USES.match(line)
        if match and not (PINNED_USES.match(match[1]) and VERSION_COMMENT.match(match[2])):
            bad.append(line.strip())
    return bad


def unpinned_installs(text: str) -> list[str]:
    """Packages that a ``pip install`` line names without ``==`` (the project itself and -r files aside)."""
    bad = []
    for line in text.splitlines():
        if "pip install" not in line:
            continue
        words = shlex.split(line.split("pip install", 1)[1].split("#", 1)[0])
        skip_next = False
        for word in words:
            if skip_next or word.startswith(("-", "$", ".")):
                skip_next = word in ("-r", "--index-url", "-e")
                continue
            if "==" not in word:
                bad.append(word)
    return bad


def missing_defaults(text: str) -> list[str]:
    """Which of a workflow's safe defaults it lacks: no token permissions at the top, PR runs cancelled."""
    wanted = {
        "permissions: {}": re.compile(r"^permissions: \{\}$", re.MULTILINE),
        "concurrency cancelling pull requests": re.compile(
            r"^concurrency:\n(?:  .*\n)*?  cancel-in-progress: \$\{\{ github\.event_name == 'pull_request' \}\}$",
            re.MULTILINE,
        ),
    }
    return [name for name, pattern in wanted.items() if not pattern.search(text)]


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def test_every_action_is_pinned_to_a_commit_with_its_version():
    assert WORKFLOWS
    for workflow in WORKFLOWS:
        assert badly_pinned_uses(workflow.read_text(encoding="utf-8")) == [], workflow.name


def test_an_unpinned_or_uncommented_action_is_found():
    """The negative control: a tag, a short commit and a pinned commit without its version."""
    text = (
        "      - uses: actions/checkout@v7\n"
        "      - uses: actions/checkout@3d3c42e\n"
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1\n"
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1\n"
    )
    assert len(badly_pinned_uses(text)) == 3


def test_every_tool_a_workflow_installs_is_pinned():
    for workflow in WORKFLOWS:
        assert unpinned_installs(workflow.read_text(encoding="utf-8")) == [], workflow.name
    files = sorted(REQUIREMENTS.rglob("*.txt"))
    assert files
    for path in files:
        for requirement in requirement_lines(path):
            assert str(requirement.specifier).startswith("=="), f"{path.name}: {requirement}"


def test_an_unpinned_install_is_found():
    text = '      - run: python -m pip install nox uv==0.13.9 -r x.txt --no-deps . -e ".[matrix]"\n'
    assert unpinned_installs(text) == ["nox"]


def _pyproject_pytest() -> Requirement:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return next(r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "pytest")


def test_ci_tests_the_lowest_pytest_that_pyproject_admits_and_a_newer_one():
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    lowest_file, newest_file = REQUIREMENTS / "lowest" / "pytest.txt", REQUIREMENTS / "pytest-newest.txt"
    assert f"requirements: {lowest_file.relative_to(ROOT)}" in ci
    assert f"requirements: {newest_file.relative_to(ROOT)}" in ci
    spec = _pyproject_pytest().specifier
    floors = [Version(s.version) for s in spec if s.operator == ">="]
    assert len(floors) == 1, spec
    (lowest,) = (Version(next(iter(r.specifier)).version) for r in requirement_lines(lowest_file))
    (newest,) = (Version(next(iter(r.specifier)).version) for r in requirement_lines(newest_file))
    assert lowest == floors[0] and spec.contains(lowest)
    assert newest > lowest and spec.contains(newest)


def test_the_matrix_cache_is_restored_on_pull_requests_only():
    """matrix.yml suppresses zizmor's cache-poisoning finding because of this condition: keep it."""
    lines = (ROOT / ".github" / "workflows" / "matrix.yml").read_text(encoding="utf-8").splitlines()
    steps = [i for i, line in enumerate(lines) if re.search(r"uses:\s*actions/cache[/@]", line)]
    assert steps
    for i in steps:
        assert lines[i + 1].strip().startswith("if: github.event_name == 'pull_request'"), lines[i : i + 2]


def expansions_in_scripts(text: str) -> list[str]:
    """Lines of ``run:`` scripts that expand a ``${{ }}`` expression (values belong in ``env:``)."""
    bad, indent = [], None
    for line in text.splitlines():
        depth = len(line) - len(line.lstrip())
        if re.match(r"^(-\s+)?run:", line.strip()):
            indent = depth
        elif indent is not None and line.strip() and depth <= indent:
            indent = None
        if indent is not None and "${{" in line:
            bad.append(line.strip())
    return bad


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_no_expression_is_expanded_inside_a_script(workflow: Path):
    """zizmor's template-injection audit flags only risky expansions; a run: script here expands none."""
    assert expansions_in_scripts(workflow.read_text(encoding="utf-8")) == []


def test_an_expansion_inside_a_script_is_found():
    text = (
        '      - run: nox -s "${{ matrix.session }}"\n'
        "      - env:\n          SESSION: ${{ matrix.session }}\n        run: |\n          echo ok\n"
        "          echo ${{ github.ref }}\n"
        "      - uses: x/y@v1\n        with:\n          key: ${{ runner.os }}\n"
    )
    assert expansions_in_scripts(text) == ['- run: nox -s "${{ matrix.session }}"', "echo ${{ github.ref }}"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_token_permission_by_default_and_superseded_pr_runs_cancelled(workflow: Path):
    assert missing_defaults(workflow.read_text(encoding="utf-8")) == []


def test_a_workflow_without_the_defaults_is_found():
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert missing_defaults(text.replace("permissions: {}", "permissions: write-all")) == ["permissions: {}"]
    no_cancel = text.replace("cancel-in-progress: ${{ github.event_name == 'pull_request' }}", "")
    assert missing_defaults(no_cancel) == ["concurrency cancelling pull requests"]
