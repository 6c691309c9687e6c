"""Relative links of the README and ``docs/``: each must name a file or folder of the checkout and, with a
``#fragment``, a heading of that Markdown page (or a ``#L10``-style line of another file).

Links are read with markdown-it-py (the ``docs`` extra): what sits in code spans and code blocks is not a link.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from .markdown import slugs

LINE_ANCHOR = re.compile(r"L\d+(-L\d+)?")


def markdown_files(root: str | os.PathLike[str]) -> list[Path]:
    """``README.md`` and every ``docs/**/*.md`` of the checkout at ``root``."""
    base = Path(root)
    readme = [base / "README.md"] if (base / "README.md").is_file() else []
    return [*readme, *sorted((base / "docs").rglob("*.md"))]


def _tokens(path: Path) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def _links(tokens: list[Token], lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line, target) of every link and image: the first line of its block that holds the target."""
    block = (0, len(lines))
    for token in tokens:
        block = (token.map[0], token.map[1]) if token.map else block
        for child in token.children or ():
            target = child.attrs.get("href") if child.type == "link_open" else child.attrs.get("src")
            if child.type in ("link_open", "image") and isinstance(target, str):
                found = (n for n in range(*block) if target in lines[n])
                yield next(found, block[0]) + 1, target


def anchors(path: Path) -> set[str]:
    """The anchors of the headings of the Markdown page ``path``."""
    tokens = _tokens(path)
    headings = [
        "".join(child.content for child in inline.children or () if child.type in ("text", "code_inline"))
        for opening, inline in itertools.pairwise(tokens)
        if opening.type == "heading_open"
    ]
    return slugs(headings)


def _problem(source: Path, target: str, root: Path) -> str | None:
    """Why the relative link ``target`` in ``source`` does not resolve, or None."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None  # not relative: this check does not go on the network
    name = unquote(parts.path)
    # normpath, not resolve: a link is to a path of the repository, whatever a symlink there points to
    path = Path(os.path.normpath(root / name.lstrip("/") if name.startswith("/") else source.parent / name))
    path = path if name else source
    if not path.is_relative_to(root):
        return "points outside the repository"
    if not path.exists():
        return f"no such file or folder {path.relative_to(root)}"
    fragment = unquote(parts.fragment)
    if not fragment or path.is_dir():
        return None
    if path.suffix == ".md":
        return None if fragment in anchors(path) else f"no heading with anchor #{fragment} in {path.name}"
    return None if LINE_ANCHOR.fullmatch(fragment) else f"#{fragment} is neither a Markdown heading nor a line"


def broken_links(root: str | os.PathLike[str], files: Iterable[Path] | None = None) -> list[str]:
    """``file:line: target: why`` for every relative link that does not resolve (``files``: the README and docs)."""
    base = Path(os.path.abspath(root))
    problems = []
    for source in markdown_files(base) if files is None else [Path(os.path.abspath(file)) for file in files]:
        for line, target in _links(_tokens(source), source.read_text(encoding="utf-8").splitlines()):
            if why := _problem(source, target, base):
                problems.append(f"{source.relative_to(base)}:{line}: {target}: {why}")
    return problems
