"""Byte sizes: parse the strings users write (``"320KiB"``) and format byte counts for humans.

Accepted forms of :func:`parse_size` (case-insensitive, optional space before the unit, ``_``
allowed between digit groups, a decimal fraction allowed when the result is a whole number of
bytes):

- a plain non-negative ``int`` or digit string: bytes (``327680``, ``"327_680"``);
- ``B``: bytes (``"512B"``);
- binary units ``KiB``, ``MiB``, ``GiB``, ``TiB`` (1024-based), and the bare ``K``, ``M``,
  ``G``, ``T`` that linker scripts and QEMU's ``-m`` use with the same 1024-based meaning
  (``"256K"``);
- decimal units ``KB``, ``MB``, ``GB``, ``TB`` (1000-based, as in SI).

Bits are not supported: ``"Kb"`` means kilobytes.
"""

from __future__ import annotations

import re
from fractions import Fraction

from edgekit.errors import EdgekitError

_UNIT_BYTES: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}

_SIZE_RE = re.compile(r"(?P<number>\d+(?:_\d+)*(?:\.\d+)?)\s*(?P<unit>[a-z]*)", re.IGNORECASE)

ACCEPTED_SIZE_FORMS = (
    "a non-negative integer of bytes or a string like '327680', '512B', '320KiB', '256K', "
    "'1.5MiB', '320KB' or '2MB' (KiB/K = 1024, KB = 1000)"
)

_FORMAT_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: an int or a size string (see the module docstring for the forms).

    Raises :class:`~edgekit.errors.EdgekitError` naming the text and the accepted forms.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise EdgekitError(f"invalid size {text!r}: expected {ACCEPTED_SIZE_FORMS}")
    if isinstance(text, int):
        if text < 0:
            raise EdgekitError(f"invalid size {text!r}: expected {ACCEPTED_SIZE_FORMS}")
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match["unit"].lower() if match else None
    if match is None or unit not in _UNIT_BYTES:
        raise EdgekitError(f"invalid size {text!r}: expected {ACCEPTED_SIZE_FORMS}")
    # Fraction keeps "1.5MiB" exact where float arithmetic could round.
    n_bytes = Fraction(match["number"].replace("_", "")) * _UNIT_BYTES[unit]
    if n_bytes.denominator != 1:
        raise EdgekitError(f"invalid size {text!r}: it is not a whole number of bytes")
    return int(n_bytes)


def format_size(n: int) -> str:
    """A byte count for humans: ``512 -> "512 B"``, ``327680 -> "320.0 KiB"`` (1024-based)."""
    sign = "-" if n < 0 else ""
    value = abs(n)
    if value < 1024:
        return f"{sign}{value} B"
    scaled = float(value)
    unit_index = 0
    # Compare the rounded value so 1048575 reads "1.0 MiB", not "1024.0 KiB".
    while unit_index < len(_FORMAT_UNITS) - 1 and round(scaled, 1) >= 1024:
        scaled /= 1024
        unit_index += 1
    return f"{sign}{scaled:.1f} {_FORMAT_UNITS[unit_index]}"
