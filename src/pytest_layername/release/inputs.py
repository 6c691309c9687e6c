"""Reading files the release tools did not write themselves: regular files only, bounded, strict JSON.

Reports, skip markers and matrix files come from other machines, other runs or other people. Each is read
only when it is a regular file (a directory, FIFO, device or socket, or a link to one, is named as such and
never read), at most a fixed size; JSON must have no duplicate keys, no NaN/Infinity and no deeper nesting
than a fixed limit. Every problem is an :class:`InputError` of one line that never echoes the input back.
"""

from __future__ import annotations

import json
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

#: How deep a report, skip marker or baseline nests at most (a report nests 7 levels).
MAX_JSON_DEPTH = 32
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80


class InputError(ValueError):
    """An input file that is missing, not a regular file, too large, or not strictly valid."""


def short(value: Any) -> str:
    """``repr(value)``, cut to about 80 characters: what messages show of an input."""
    return _short.repr(value)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 2**10} KiB"


def read_bytes(path: str | os.PathLike[str], what: str, limit: int, missing_hint: str = "") -> bytes:
    """The contents of the regular file ``path`` (links followed), at most ``limit`` bytes.

    ``what`` names the file in messages (``"report"``, ``"matrix file"``); ``missing_hint`` follows
    "does not exist". Opened without blocking and checked on the open descriptor, so a FIFO is never waited on.
    """
    source = Path(path)
    where = f"{what} {source}"
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if source.is_symlink() else ""
        raise InputError(f"{where} does not exist{broken}{f' ({missing_hint})' if missing_hint else ''}") from None
    except OSError as error:
        raise InputError(f"{where} is unreadable: {error.strerror or error}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(f"{where} is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        os.close(fd)
        raise InputError(f"{where} is {info.st_size} bytes, larger than the {_size(limit)} a {what} may be")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise InputError(f"{where} is unreadable: {error.strerror or error}") from None
    if len(data) > limit:  # it grew after the check
        raise InputError(f"{where} is larger than the {_size(limit)} a {what} may be")
    return data


def read_text(path: str | os.PathLike[str], what: str, limit: int, missing_hint: str = "") -> str:
    """:func:`read_bytes` decoded as UTF-8."""
    data = read_bytes(path, what, limit, missing_hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{what} {path} is unreadable: not UTF-8 (byte {error.start})") from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {short(key)} in one object")
        found[key] = value
    return found


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += [(child, depth + 1) for child in item.values()]
        elif isinstance(item, list):
            stack += [(child, depth + 1) for child in item]
    return deepest


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON: duplicate keys, NaN/Infinity and nesting deeper than ``max_depth`` are errors."""
    too_deep = f"{where} is unreadable: nested deeper than {max_depth} levels"
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_reject_constant)
    except RecursionError:
        raise InputError(too_deep) from None
    except ValueError as error:
        raise InputError(f"{where} is unreadable: {error}") from None
    if _depth(value) > max_depth:
        raise InputError(too_deep)
    return value


def read_json(path: str | os.PathLike[str], what: str, limit: int, missing_hint: str = "") -> Any:
    """A JSON file read by :func:`read_text` and parsed by :func:`parse_json`."""
    return parse_json(read_text(path, what, limit, missing_hint), f"{what} {path}")
