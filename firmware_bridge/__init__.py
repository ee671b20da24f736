"""Host side of the serial link to a board: framing, clients, the virtual board and QEMU.

This package must never import torch or TensorFlow: it runs on lean hosts and in CI jobs
that only talk to boards.
"""

from __future__ import annotations

from firmware_bridge.errors import BoardTimeout, BridgeError, FrameError

__all__ = ["BoardTimeout", "BridgeError", "FrameError"]
