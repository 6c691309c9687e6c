"""The docs: ``docs/reference/`` is what the code generates now, every relative link resolves, the README is short,
and each option is tabulated in one place (the generated page)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_layername import cli, plugin
from pytest_layername.cli import full_parser, main
from pytest_layername.docs import (
    REFERENCE_DIR,
    broken_links,
    markdown_files,
    reference_pages,
    stale_pages,
    write_reference,
)
from pytest_layername.docs.markdown import slugs
from pytest_layername.plugin import options
from pytest_layername.release import known_bugs, matrix, report

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / REFERENCE_DIR
STALE = (
    "is stale (the code it is generated from changed): run `nox -s docs` (or `layername docs`) and commit the result"
)


def reference_problems() -> list[str]:
    """What the docs test reports: the reference pages that differ from what the code generates now."""
    return stale_pages(REFERENCE, reference_pages(*full_parser()))


def test_the_reference_is_what_the_code_generates():
    assert reference_problems() == []


def _changed_option_help(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = [
        dataclasses.replace(o, help=f"CHANGED-HELP {o.help}") if o.flag == "--layername-report" else o
        for o in options.OPTIONS
    ]
    monkeypatch.setattr(options, "OPTIONS", tuple(changed))


def _changed_fixture_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.compile_counter, "__doc__", "Changed.")


def _changed_command_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "gate", (".gate", "changed"))


def _changed_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = report.report_schema()
    changed = json.loads(json.dumps(schema))
    changed["properties"]["run"]["properties"]["torch"]["description"] = "changed"
    monkeypatch.setattr(report, "report_schema", lambda: changed)


def _changed_matrix_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(matrix.CELL_FIELDS, "description", "changed")


def _changed_known_bug_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(known_bugs.FIELDS, "summary", "changed")


@pytest.mark.parametrize(
    ("change", "page"),
    [
        (_changed_option_help, "options.md"),
        (_changed_fixture_docstring, "fixtures-and-markers.md"),
        (_changed_command_help, "cli.md"),
        (_changed_schema, "report.md"),
        (_changed_matrix_field, "matrix-toml.md"),
        (_changed_known_bug_field, "known-bugs.md"),
    ],
)
def test_a_changed_source_fails_the_docs_test_until_regenerated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, change: Callable[[pytest.MonkeyPatch], None], page: str
):
    """The negative controls: the docs test names the one page a changed definition makes stale, and says to
    run ``nox -s docs``; writing the pages again (what that session does) makes it pass."""
    change(monkeypatch)
    assert reference_problems() == [f"{REFERENCE / page} {STALE}"]
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE, copy)
    wanted = reference_pages(*full_parser())
    assert write_reference(copy, wanted) == [copy / page]
    assert stale_pages(copy, wanted) == []


def test_layername_docs_check_fails_on_a_stale_page(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """``layername docs --check`` (what CI could run) passes on this checkout and fails once an option changes."""
    assert main(["docs", "--check", "--root", str(ROOT)]) == 0
    _changed_option_help(monkeypatch)
    capsys.readouterr()
    assert main(["docs", "--check", "--root", str(ROOT)]) == 1
    assert capsys.readouterr().out == f"layername docs: {REFERENCE / 'options.md'} {STALE}\n"


def test_pytest_help_shows_the_option_help_the_reference_shows(
    monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester
):
    """The reference and ``pytest --help`` read one definition: a changed help text reaches both."""
    _changed_option_help(monkeypatch)
    result = pytester.runpytest_inprocess("--help")
    assert "CHANGED-HELP" in result.stdout.str()
    assert "CHANGED-HELP" in reference_pages(*full_parser())["options.md"]


def test_a_generated_page_no_longer_generated_is_stale(tmp_path: Path):
    wanted = {"a.md": "# A\n"}
    (tmp_path / "a.md").write_text("# A\n")
    (tmp_path / "old.md").write_text(reference_pages(*full_parser())["options.md"])  # has the banner
    (tmp_path / "notes.md").write_text("# Hand-written\n")  # no banner: not the generator's
    assert stale_pages(tmp_path, wanted) == [f"{tmp_path / 'old.md'} is no longer generated: run `nox -s docs` "
                                             "(or `layername docs`) and commit the result"]  # fmt: skip


def test_an_undocumented_definition_stops_the_generator(monkeypatch: pytest.MonkeyPatch):
    """Every option, fixture, argument and field must say what it is: the generator refuses a blank."""
    schema = json.loads(json.dumps(report.report_schema()))
    del schema["properties"]["run"]["properties"]["torch"]["description"]
    monkeypatch.setattr(report, "report_schema", lambda: schema)
    with pytest.raises(ValueError, match=r"report.schema.json: run.torch has no description"):
        reference_pages(*full_parser())
    monkeypatch.undo()
    monkeypatch.setattr(plugin.fusion_matches, "__doc__", None)
    with pytest.raises(ValueError, match="fixture fusion_matches has no docstring"):
        reference_pages(*full_parser())
    monkeypatch.undo()
    parser, commands = full_parser()
    commands["gate"].add_argument("--undocumented")
    with pytest.raises(ValueError, match=r"layername gate --undocumented UNDOCUMENTED has no help"):
        reference_pages(parser, commands)


def test_every_relative_link_resolves():
    assert broken_links(ROOT) == []
    assert len(markdown_files(ROOT)) >= 10  # README, the task pages, the reference: the check read them


TREE = {
    "README.md": """\
# Project

[page](docs/page.md), [anchor](docs/page.md#second-heading), [repeated](docs/page.md#same-1),
[code heading](docs/page.md#the-layername-docs-command), [folder](docs), [self](#project),
[line](src/x.py#L3), [lines](src/x.py#L3-L5), [web](https://example.org/nowhere), `[in code](nowhere.md)`

```
[in a block](nowhere.md)
```

[missing](docs/nowhere.md)
[bad anchor](docs/page.md#no-such-heading)
![image](docs/missing.png)
[outside](../outside.md)
""",
    "docs/page.md": "# Page\n\n## Second heading\n\n## Same\n\n## Same\n\n## The `layername docs` command\n\n"
    "| a | b |\n|---|---|\n| [in a table](missing-in-table.md) | x |\n\n[bad line](../src/x.py#main)\n",
    "src/x.py": "x = 1\n",
}


def test_broken_links_are_found(tmp_path: Path):
    """The negative control: each kind of broken link, by file and line; code and web links are not checked."""
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert broken_links(tmp_path) == [
        "README.md:11: docs/nowhere.md: no such file or folder docs/nowhere.md",
        "README.md:12: docs/page.md#no-such-heading: no heading with anchor #no-such-heading in page.md",
        "README.md:13: docs/missing.png: no such file or folder docs/missing.png",
        "README.md:14: ../outside.md: points outside the repository",
        "docs/page.md:13: missing-in-table.md: no such file or folder docs/missing-in-table.md",
        "docs/page.md:15: ../src/x.py#main: #main is neither a Markdown heading nor a line",
    ]


def test_a_broken_link_in_the_real_docs_is_found(tmp_path: Path):
    """The same check over a copy of this checkout's README and docs, with one link broken."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    for entry in ROOT.iterdir():  # what the docs link to, as it is in the checkout
        if entry.name not in ("README.md", "docs"):
            (tmp_path / entry.name).symlink_to(entry)
    assert broken_links(tmp_path) == []
    page = tmp_path / "docs" / "writing-tests.md"
    page.write_text(page.read_text() + "\n[gone](reference/no-such-page.md)\n")
    problems = broken_links(tmp_path)
    assert len(problems) == 1 and problems[0].endswith(
        "reference/no-such-page.md: no such file or folder docs/reference/no-such-page.md"
    )


def test_github_heading_anchors():
    assert slugs(["A `code` heading", "Same", "Same", "Élan, vital!", "run.known_bugs[]"]) == {
        "a-code-heading",
        "same",
        "same-1",
        "élan-vital",
        "runknown_bugs",
    }


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


#: a Markdown table row that documents an option: its first cell names one
OPTION_ROW = re.compile(r"^\|\s*`(--layername-[a-z-]+)", re.MULTILINE)


def tabulated_options(text: str) -> list[str]:
    return OPTION_ROW.findall(text)


def test_each_option_is_tabulated_once_in_the_generated_page_and_nowhere_by_hand():
    hand_written = [path for path in markdown_files(ROOT) if REFERENCE not in path.parents]
    assert {
        path.name: tabulated_options(path.read_text()) for path in hand_written if tabulated_options(path.read_text())
    } == {}
    generated = tabulated_options((REFERENCE / "options.md").read_text())
    assert sorted(generated) == sorted(o.flag for o in options.OPTIONS) and len(set(generated)) == len(generated)
    # the negative control: the old README's table listed --layername-allow-not-exercised twice
    old = "| `--layername-allow-not-exercised` | | | run even ... |\n| `--layername-allow-not-exercised` | | | let |\n"
    assert tabulated_options(old) == ["--layername-allow-not-exercised"] * 2


def test_layername_docs_without_markdown_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setitem(sys.modules, "markdown_it", None)  # as if the docs extra were not installed
    monkeypatch.delitem(sys.modules, "pytest_layername.docs.links")
    assert main(["docs", "--check", "--root", str(ROOT)]) == 2
    assert "pip install 'pytest-layername[docs]'" in capsys.readouterr().err


def test_the_slow_marker_has_one_wording():
    """pyproject registers ``layername_slow`` for runs without the plugin, in the plugin's own words."""
    pyproject = matrix.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["pytest"]["ini_options"]["markers"] == [plugin.SLOW_MARKER]
