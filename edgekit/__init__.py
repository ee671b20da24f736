"""edgekit: memory-budgeted NAS, int8 export and on-device timing for microcontrollers."""

from __future__ import annotations

from edgekit.errors import EdgekitError

__version__ = "0.1.0"

__all__ = ["EdgekitError", "__version__"]
