"""``docs/reference/``: the generated pages, written or checked against what the code would generate now."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from . import pages
from .markdown import BANNER, page

#: where the reference lives in a checkout
REFERENCE_DIR = Path("docs") / "reference"
#: what a stale or missing page tells the reader to do
REGENERATE = "run `nox -s docs` (or `layername docs`) and commit the result"


def _index(found: Mapping[str, str]) -> str:
    titles = {
        name: next(line[2:] for line in text.splitlines() if line.startswith("# ")) for name, text in found.items()
    }
    lines = [f"- [{title}]({name})" for name, title in titles.items()]
    intro = (
        "Generated from the code by `nox -s docs`; a test fails when a page here is stale. "
        "The pages by task: [docs](../README.md)."
    )
    return page("Reference", "the page list of src/pytest_layername/docs/reference.py", intro, "\n".join(lines))


def reference_pages(parser: argparse.ArgumentParser, commands: Mapping[str, argparse.ArgumentParser]) -> dict[str, str]:
    """File name -> content of every reference page (``README.md``, the index, included)."""
    found = {
        "options.md": pages.options_page(),
        "fixtures-and-markers.md": pages.fixtures_page(),
        "cli.md": pages.cli_page(parser, commands),
        "report.md": pages.report_page(),
        "matrix-toml.md": pages.matrix_page(),
        "known-bugs.md": pages.known_bugs_page(),
    }
    return {"README.md": _index(found), **found}


def _generated(path: Path) -> bool:
    prefix = BANNER.split("{", 1)[0]
    with path.open(encoding="utf-8") as file:
        return file.readline().startswith(prefix)


def stale_pages(directory: str | os.PathLike[str], wanted: Mapping[str, str]) -> list[str]:
    """One line per page in ``directory`` that differs from ``wanted``, is missing, or is generated but no longer
    wanted; empty when the reference is current."""
    folder = Path(directory)
    problems = []
    for name, text in wanted.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing: {REGENERATE}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is stale (the code it is generated from changed): {REGENERATE}")
    for path in sorted(folder.glob("*.md")):
        if path.name not in wanted and _generated(path):
            problems.append(f"{path} is no longer generated: {REGENERATE}")
    return problems


def write_reference(directory: str | os.PathLike[str], wanted: Mapping[str, str]) -> list[Path]:
    """Write the pages that differ, remove generated pages no longer wanted; the paths changed."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in wanted.items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted(folder.glob("*.md")):
        if path.name not in wanted and _generated(path):
            path.unlink()
            changed.append(path)
    return changed
