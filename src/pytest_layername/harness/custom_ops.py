"""The one way this package defines a custom op: the schema check, ``torch.library.custom_op``, its fake.

Reference ops, fusion ops, round-trip probes and field-check ops all go through :func:`define_op`. It refuses
a parameter typed as an opaque type that has a default (torch schemas cannot hold one; ``infer_schema`` fails
late with a message that does not name the cause) and can type the ``layer_name`` parameter per mode.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..core.compat import is_registered_opaque_type


class FieldCheckError(ValueError):
    """A layer-name type or op that breaks a contract torch relies on."""


class OpaqueDefaultError(FieldCheckError):
    """An opaque (``LayerName``) op argument declared with a default value."""


def _is_opaque_annotation(annotation: Any, opaque_types: Sequence[type]) -> bool:
    return annotation in opaque_types or (isinstance(annotation, type) and is_registered_opaque_type(annotation))


def check_opaque_defaults(fn: Callable[..., Any], op_name: str, opaque_types: Sequence[type] = ()) -> None:
    """Raise :class:`OpaqueDefaultError` if a parameter of ``fn`` typed as an opaque type has a default."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable string annotations: fall back to what the signature holds
        hints = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        annotation = hints.get(parameter.name, parameter.annotation)
        if _is_opaque_annotation(annotation, opaque_types):
            annotation = getattr(annotation, "__qualname__", annotation)
            raise OpaqueDefaultError(
                f"op {op_name}: parameter {parameter.name!r} has opaque type {annotation} and a default "
                f"({parameter.default!r}); torch schemas cannot hold opaque defaults (infer_schema raises "
                f"'unsupported default value type'). Remove the default and pass the layer name at every call "
                f"site, e.g. {parameter.name}=_encode_layer_name(self.prefix)"
            )


def define_op(
    qualname: str,
    fn: Callable[..., Any],
    *,
    fake: Callable[..., Any],
    mutates_args: Iterable[str] = (),
    tags: Sequence[torch.Tag] = (),
    layer_name_type: type | None = None,
    opaque_types: Sequence[type] = (),
) -> torch._ops.OpOverloadPacket:
    """Register ``fn`` as ``namespace::name`` with ``fake`` and return the op packet (``torch.ops.ns.name``).

    ``layer_name_type`` (``LayerName`` or ``str``) becomes the annotation of ``fn``'s ``layer_name``
    parameter, so one body serves both modes; pass a fresh function per registration.
    """
    if layer_name_type is not None:
        fn.__annotations__["layer_name"] = layer_name_type
    check_opaque_defaults(fn, qualname, opaque_types)
    op = torch.library.custom_op(qualname, fn, mutates_args=tuple(mutates_args), tags=tuple(tags))
    op.register_fake(fake)
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name)


def qualified_name(op: torch._ops.OpOverloadPacket) -> str:
    """``namespace::name`` of an op packet."""
    return op._qualified_op_name
