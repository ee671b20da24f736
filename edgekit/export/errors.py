"""Errors of the export stage."""

from __future__ import annotations

from edgekit.errors import EdgekitError


class ExportError(EdgekitError):
    """A model cannot be exported, converted or verified (the message says which step)."""


class UnsupportedOpError(ExportError):
    """The converted model holds an op that TFLite Micro cannot run in int8.

    ``op`` is the TFLite builtin name, ``layer`` the network layer (the extracted module's name)
    that produced it, or ``None`` when the op cannot be traced back to one.
    """

    def __init__(self, message: str, op: str, layer: str | None) -> None:
        super().__init__(message)
        self.op = op
        self.layer = layer
