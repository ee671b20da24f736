"""Errors of the memory model; all derive from edgekit.errors.EdgekitError."""

from __future__ import annotations

from edgekit.errors import EdgekitError


class MemoryModelError(EdgekitError):
    """Root of the memory model's errors (also raised for invalid parameters)."""


class ModelFileError(MemoryModelError):
    """A .tflite file is missing, unreadable or not a model the memory model understands."""


class UnsupportedOperatorError(MemoryModelError):
    """The memory model has no allocation table for an operator in the model."""


class TflmRuntimeError(MemoryModelError):
    """The TFLite Micro interpreter cannot run the model at any reasonable arena size."""
