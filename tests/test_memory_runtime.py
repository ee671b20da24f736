"""Sizes of TFLite Micro's core runtime structs for both pointer widths.

x86-64 values are what the tflite-micro Python package allocates (read from a gdb trace of its
SingleArenaBufferAllocator); 32-bit values follow from the same field lists.
"""

from __future__ import annotations

import pytest

from edgekit.estimate import runtime as rt
from edgekit.estimate.layout import Abi, CType
from edgekit.estimate.runtime import FIRMWARE_32BIT, PYTHON_X86_64

CORE_STRUCTS = [
    # struct, (size, align) on the x86-64 Python build, (size, align) on 32-bit firmware
    (rt.single_arena_buffer_allocator, (104, 8), (36, 4)),  # recording vs plain
    (rt.greedy_memory_planner, (72, 8), (44, 4)),
    (rt.micro_allocator, (272, 8), (36, 4)),  # RecordingMicroAllocator vs MicroAllocator
    (rt.builtin_data_allocator, (16, 8), (8, 4)),
    (rt.subgraph_allocations, (24, 8), (8, 4)),  # compressed-tensor list only when compressed
    (rt.eval_tensor, (24, 8), (12, 4)),
    (rt.node_and_registration, (64, 8), (32, 4)),
    (rt.tflite_tensor, (64, 8), (40, 4)),
    (rt.affine_quantization, (24, 8), (12, 4)),
    (rt.scratch_buffer_request, (16, 8), (12, 4)),
    (rt.scratch_buffer_handle, (8, 8), (4, 4)),
    (rt.allocation_info, (32, 8), (24, 4)),
]


@pytest.mark.parametrize(("struct", "x86_64", "cortex_m"), CORE_STRUCTS)
def test_core_struct_sizes(struct, x86_64: tuple[int, int], cortex_m: tuple[int, int]) -> None:
    assert struct(PYTHON_X86_64) == CType(*x86_64)
    assert struct(FIRMWARE_32BIT) == CType(*cortex_m)


def test_plain_64_bit_allocator_objects_match_the_binary() -> None:
    # MicroAllocator::Create(arena, size) in the x86-64 .so allocates 72-byte objects.
    plain = rt.firmware_config(pointer_bytes=8)
    assert rt.single_arena_buffer_allocator(plain).size == 72
    assert rt.micro_allocator(plain).size == 72


def test_int_array_is_count_plus_elements() -> None:
    assert rt.int_array(0) == CType(4, 4)
    assert rt.int_array(8) == CType(36, 4)


@pytest.mark.parametrize(
    ("fields", "pointer_bytes", "expected"),
    [
        (["i8", "i32"], 8, CType(8, 4)),
        (["ptr", "bool"], 8, CType(16, 8)),
        (["ptr", "bool"], 4, CType(8, 4)),
        (["i32", "f64"], 4, CType(16, 8)),  # double stays 8-aligned on ARM AAPCS
        ([("i16", 3)], 4, CType(6, 2)),
    ],
)
def test_c_struct_layout_rules(fields: list, pointer_bytes: int, expected: CType) -> None:
    assert Abi(pointer_bytes).struct(fields) == expected
