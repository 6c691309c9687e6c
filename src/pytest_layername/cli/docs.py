"""``layername docs``: write ``docs/reference/`` from the code, or check it is current; check the docs' links."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..docs import REFERENCE_DIR, reference_pages, stale_pages, write_reference
from . import CommandError, full_parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername docs``."""
    p.add_argument("--root", type=Path, default=Path("."), help="the checkout (default: the current folder)")
    p.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; exit 1 when a page of {REFERENCE_DIR} is stale or a link is broken",
    )
    p.set_defaults(func=_cmd_docs)


def _cmd_docs(args: argparse.Namespace) -> int:
    try:
        from ..docs.links import broken_links
    except ModuleNotFoundError as error:
        raise CommandError(
            f"layername docs reads links with markdown-it-py: pip install 'pytest-layername[docs]' ({error})"
        ) from None
    wanted = reference_pages(*full_parser())
    directory = args.root / REFERENCE_DIR
    if args.check:
        problems = stale_pages(directory, wanted)
    else:
        problems = []
        for path in write_reference(directory, wanted):
            print(f"layername docs: {'wrote' if path.exists() else 'removed'} {path}")
    problems += broken_links(args.root)
    for problem in problems:
        print(f"layername docs: {problem}")
    return 1 if problems else 0
