"""Exceptions raised by edgekit. Every error a user can cause derives from EdgekitError."""

from __future__ import annotations


class EdgekitError(Exception):
    """Root of every edgekit error; the CLI prints it as one line and exits 1."""


class ProfileError(EdgekitError):
    """A device profile is missing, malformed or names an unknown board."""


class DatasetError(EdgekitError):
    """A dataset path is missing or its content is malformed."""


class ConfigError(EdgekitError):
    """An architecture config or genome string is invalid."""


class CheckpointError(EdgekitError):
    """A checkpoint is missing, corrupt or belongs to another space."""


class OutdatedCheckpointError(CheckpointError):
    """A checkpoint saved by an older edgekit, before its space gained weights."""
