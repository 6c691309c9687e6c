"""``layername probe``: torch, opaque support and why not, the auto mode, the device."""

from __future__ import annotations

import argparse
import json

from ..core.environment import probe


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername probe``."""
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    info = probe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0
