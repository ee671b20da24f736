"""Exceptions raised by the host side of the serial link."""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every firmware_bridge error."""


class FrameError(BridgeError):
    """A frame on the wire is malformed (bad length, checksum or escape)."""


class BoardTimeout(BridgeError):
    """The board did not answer in time."""
