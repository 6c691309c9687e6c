"""The value semantics the broken ``LayerName`` types share, so each module shows only its own bug."""

from __future__ import annotations

from typing import Any


class NamedValue:
    """A layer name held as ``value``: equal and hashed by class and name, shown to FX as ``LayerName(...)``,
    pickled by name. A broken implementation subclasses it (with torch's opaque base) and overrides its bug."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.value == self.value

    def __hash__(self) -> int:
        return hash((type(self), self.value))

    def __fx_repr__(self) -> tuple[str, dict[str, type]]:
        return f"LayerName({self.value!r})", {"LayerName": type(self)}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.value,)
