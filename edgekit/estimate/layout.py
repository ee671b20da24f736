"""C struct layout for the TFLite Micro runtime, parameterised by pointer width.

Every persistent ("tail") allocation that is not tensor data is a C struct whose size depends
on the target ABI: 8-byte pointers on the x86-64 tflite-micro Python build, 4-byte pointers on
Cortex-M. Structs are written here as field lists in source order and laid out with the usual
C rules (each field at a multiple of its alignment, size rounded up to the struct alignment).
``int64_t`` and ``double`` are 8-byte aligned on both x86-64 SysV and ARM AAPCS.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

# Scalar kinds -> size in bytes; "ptr" and "size_t" take the pointer width.
_SCALAR_BYTES = {
    "bool": 1, "i8": 1, "u8": 1, "i16": 2, "u16": 2,
    "i32": 4, "u32": 4, "f32": 4, "int": 4, "enum": 4,
    "i64": 8, "u64": 8, "f64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class CType:
    """Size and alignment of a C type on one ABI."""

    size: int
    align: int


Field = str | CType | tuple[str | CType, int]  # a kind, a nested type, or (type, count)


@dataclass(frozen=True)
class Abi:
    """Target ABI: the pointer width is all that varies between the targets we model."""

    pointer_bytes: int

    def scalar(self, kind: str) -> CType:
        if kind in ("ptr", "size_t"):
            return CType(self.pointer_bytes, self.pointer_bytes)
        size = _SCALAR_BYTES[kind]
        return CType(size, size)

    def struct(self, fields: Sequence[Field]) -> CType:
        """Lay out ``fields`` in order; returns the struct's size and alignment."""
        return _layout(self, tuple(fields))


@functools.lru_cache(maxsize=4096)
def _layout(abi: Abi, fields: tuple[Field, ...]) -> CType:
    offset = 0
    align = 1
    for field in fields:
        kind, count = field if isinstance(field, tuple) else (field, 1)
        member = kind if isinstance(kind, CType) else abi.scalar(kind)
        offset = align_up(offset, member.align) + member.size * count
        align = max(align, member.align)
    return CType(align_up(offset, align), align)


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    return value // alignment * alignment
