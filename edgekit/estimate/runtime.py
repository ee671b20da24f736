"""Which TFLite Micro build is being modelled, and the sizes of its core structs.

Field lists follow the TFLite Micro sources (tensorflow/tflite-micro, 2025-2026):
``micro/c/common.h`` (TfLiteTensor, TfLiteEvalTensor, TfLiteNode, TfLiteAffineQuantization),
``micro/micro_allocator.h`` (NodeAndRegistration, SubgraphAllocations, ScratchBufferRequest,
ScratchBufferHandle, MicroAllocator), ``micro/micro_allocation_info.h`` (AllocationInfo),
``micro/arena_allocator/single_arena_buffer_allocator.h`` and its recording subclass,
``micro/memory_planner/greedy_memory_planner.h`` and ``micro/recording_micro_allocator.h``.
Each x86-64 size was checked against the allocations the tflite-micro Python package makes
(traced under gdb); the check is repeated by tests/test_memory_runtime.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from edgekit.estimate.layout import Abi, CType


@dataclass(frozen=True)
class RuntimeConfig:
    """The TFLite Micro build whose arena is modelled.

    ``recording_allocator``: the Python package builds its interpreter on
    ``RecordingMicroAllocator`` (bigger allocator objects in the tail); firmware normally uses
    ``MicroInterpreter(model, resolver, arena, size)``, i.e. plain ``MicroAllocator``.
    ``compression``: built with ``USE_TFLM_COMPRESSION`` (the Python wheel is; firmware builds
    are not unless asked), which adds fields to some structs.
    """

    pointer_bytes: int = 8
    alignment: int = 16  # MicroArenaBufferAlignment()
    recording_allocator: bool = True
    compression: bool = True
    name: str = "tflite-micro Python package (x86-64, reference kernels)"

    @property
    def abi(self) -> Abi:
        return Abi(self.pointer_bytes)

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        # A config is hashed several times per estimate (it keys the fast path's caches):
        # once per object. Of the fields that hash alike in every process (it may be pickled).
        fields = (self.pointer_bytes, self.alignment, self.recording_allocator, self.compression)
        return hash(fields)


PYTHON_X86_64 = RuntimeConfig()
FIRMWARE_32BIT = RuntimeConfig(
    pointer_bytes=4,
    recording_allocator=False,
    compression=False,
    name="TFLite Micro firmware (32-bit, reference kernels)",
)


def firmware_config(pointer_bytes: int = 4, alignment: int = 16) -> RuntimeConfig:
    """A firmware build: plain MicroAllocator, no compression, the given pointer width."""
    return RuntimeConfig(
        pointer_bytes=pointer_bytes,
        alignment=alignment,
        recording_allocator=False,
        compression=False,
        name=f"TFLite Micro firmware ({8 * pointer_bytes}-bit, reference kernels)",
    )


# --- core runtime structs -------------------------------------------------------------------


@functools.cache
def int_array(count: int) -> CType:
    """TfLiteIntArray / TfLiteFloatArray with ``count`` elements (size + flexible array)."""
    return CType(4 + 4 * count, 4)


@functools.cache
def tflite_tensor(c: RuntimeConfig) -> CType:
    quantization = c.abi.struct(["enum", "ptr"])  # TfLiteQuantization
    params = c.abi.struct(["f32", "i32"])  # TfLiteQuantizationParams
    return c.abi.struct([quantization, params, "ptr", "ptr", "size_t", "enum", "enum", "bool"])


@functools.cache
def eval_tensor(c: RuntimeConfig) -> CType:
    return c.abi.struct(["ptr", "ptr", "enum"])


@functools.cache
def affine_quantization(c: RuntimeConfig) -> CType:
    return c.abi.struct(["ptr", "ptr", "i32"])


@functools.cache
def node_and_registration(c: RuntimeConfig) -> CType:
    node = c.abi.struct(["ptr"] * 6 + ["int"])  # TfLiteNode
    return c.abi.struct([node, "ptr"])


@functools.cache
def subgraph_allocations(c: RuntimeConfig) -> CType:
    # node_and_registrations, tensors (+ the compressed-tensor list with compression)
    return c.abi.struct(["ptr"] * (3 if c.compression else 2))


@functools.cache
def scratch_buffer_request(c: RuntimeConfig) -> CType:
    return c.abi.struct(["size_t", "int", "int"])


@functools.cache
def scratch_buffer_handle(c: RuntimeConfig) -> CType:
    return c.abi.struct(["ptr"])


@functools.cache
def allocation_info(c: RuntimeConfig) -> CType:
    return c.abi.struct(["size_t", "ptr", "int", "int", "i32", "bool"])


@functools.cache
def single_arena_buffer_allocator(c: RuntimeConfig) -> CType:
    # two interface vtables, buffer_head_, buffer_tail_, head_, tail_, temp_,
    # temp_buffer_count_, temp_buffer_ptr_check_sum_ (intptr_t)
    fields: list = ["ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "int", "ptr"]
    if c.recording_allocator:  # requested head/tail bytes, used bytes, allocation count
        fields += ["size_t"] * 4
    return c.abi.struct(fields)


@functools.cache
def greedy_memory_planner(c: RuntimeConfig) -> CType:
    return c.abi.struct(
        ["ptr", "int", "int", "ptr", "ptr", "ptr", "ptr", "int", "int", "ptr", "bool"]
    )


@functools.cache
def micro_allocator(c: RuntimeConfig) -> CType:
    # vtable, non-persistent / persistent / builtin-data allocators, planner,
    # model_is_allocating_, scratch_buffer_request_count_, max_head_buffer_usage_,
    # scratch_buffer_head_
    fields: list = ["ptr", "ptr", "ptr", "ptr", "ptr", "bool", "size_t", "size_t", "ptr"]
    if c.recording_allocator:
        # recording_memory_allocator_ + one RecordedAllocation per category
        recorded = c.abi.struct(["size_t", "size_t", "size_t"])
        categories = 8 if c.compression else 7
        fields += ["ptr", (recorded, categories)]
    return c.abi.struct(fields)


@functools.cache
def builtin_data_allocator(c: RuntimeConfig) -> CType:
    return c.abi.struct(["ptr", "ptr"])  # vtable + persistent allocator
