"""``analyze_tflite``: exact TFLite Micro arena and flash for a .tflite file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.estimate.arena import (
    ArenaEvent,
    ArenaModel,
    build_events,
    minimum_arena,
    persistent_usage,
    prepare_temp_peaks,
    replay,
)
from edgekit.estimate.errors import MemoryModelError
from edgekit.estimate.flash import FlashReport, flash_breakdown
from edgekit.estimate.layout import align_up
from edgekit.estimate.runtime import PYTHON_X86_64, RuntimeConfig, firmware_config
from edgekit.estimate.tflite_file import ModelInfo, load_model
from edgekit.units import format_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorUse:
    """A buffer of the memory plan (a tensor or a kernel scratch buffer)."""

    name: str
    bytes: int  # planned size (aligned)
    offset: int  # offset in the head
    first_used: int  # allocation scope: 0 = graph input, i + 1 = operator i
    last_used: int
    tensor_index: int | None  # None for scratch buffers


@dataclass(frozen=True)
class OpMemory:
    """Memory around one operator of the main subgraph."""

    index: int
    opcode: str
    live_bytes: int  # sum of planned buffers alive while it runs
    extent_bytes: int  # highest planned byte in use while it runs (head needed so far)
    tail_bytes: int  # persistent bytes its options, OpData and Prepare allocate
    prepare_temp_bytes: int  # temporaries its Prepare holds at once
    tensors: tuple[TensorUse, ...]


@dataclass(frozen=True)
class MemoryReport:
    """Arena and flash of one model for one TFLite Micro build.

    ``arena_bytes`` is the smallest ``arena_size`` that allocates and invokes. ``head_bytes``
    (planned tensors and scratch buffers) plus ``tail_bytes`` (persistent structures) is the
    finished layout, what TFLM's allocation report prints for a 16-byte-multiple arena;
    ``arena_bytes`` exceeds it when a transient step needs more (``limited_by`` says which)
    and can be up to alignment - 1 bytes below it.
    """

    arena_bytes: int
    head_bytes: int
    tail_bytes: int
    flash: FlashReport
    peak_op: tuple[int, str] | None
    peak_tensors: tuple[TensorUse, ...]
    per_op: tuple[OpMemory, ...]
    tail_breakdown: dict[str, int]
    limited_by: str
    runtime: RuntimeConfig
    seconds: float
    model_bytes: bytes = field(default=b"", repr=False, compare=False)

    @property
    def flash_bytes(self) -> int:
        return self.flash.total_bytes

    @property
    def layout_bytes(self) -> int:
        """Head + tail of the finished layout (TFLM's "Arena allocation total")."""
        return self.head_bytes + self.tail_bytes

    @property
    def pointer_bytes(self) -> int:
        return self.runtime.pointer_bytes

    @property
    def alignment(self) -> int:
        return self.runtime.alignment

    def summary(self) -> str:
        peak = f"peak at op {self.peak_op[0]} {self.peak_op[1]}" if self.peak_op else "no ops"
        return (
            f"arena {format_size(self.arena_bytes)} ({self.arena_bytes} B: head "
            f"{self.head_bytes} + tail {self.tail_bytes}, limited by {self.limited_by}), "
            f"flash {format_size(self.flash_bytes)}; {peak} [{self.runtime.name}]"
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per operator, ready for a table."""
        return [
            {
                "op": op.index,
                "opcode": op.opcode,
                "live_bytes": op.live_bytes,
                "extent_bytes": op.extent_bytes,
                "tail_bytes": op.tail_bytes,
                "prepare_temp_bytes": op.prepare_temp_bytes,
                "tensors": ", ".join(f"{t.name}:{t.bytes}" for t in op.tensors),
                "peak": self.peak_op is not None and op.index == self.peak_op[0],
            }
            for op in self.per_op
        ]


def runtime_for(pointer_bytes: int, alignment: int) -> RuntimeConfig:
    """The build modelled for a pointer width: the Python package on 8, firmware otherwise."""
    if pointer_bytes not in (4, 8):
        raise MemoryModelError(f"pointer_bytes must be 4 or 8, got {pointer_bytes}")
    if alignment <= 0 or alignment & (alignment - 1):
        raise MemoryModelError(f"alignment must be a power of two, got {alignment}")
    if pointer_bytes == 8 and alignment == PYTHON_X86_64.alignment:
        return PYTHON_X86_64
    return firmware_config(pointer_bytes, alignment)


def _describe_limit(arena: ArenaModel, model: ModelInfo, failed: int | None) -> str:
    if failed is None:
        return "nothing"
    event: ArenaEvent = arena.events[failed]
    resize_index = max(i for i, e in enumerate(arena.events) if e.kind == "resize")
    if failed >= resize_index:
        return "final layout (head + tail)"
    if event.kind == "plan":
        return f"memory planner scratch ({len(arena.requests)} buffers)"
    if event.category == "memory planning":
        return "memory-planning tables"
    if event.op is not None and event.kind == "temp":
        opcode = model.subgraphs[0].operators[event.op].opcode
        return f"Prepare temporaries of op {event.op} ({opcode})"
    return f"{event.category} allocation"


def _per_op(
    arena: ArenaModel, model: ModelInfo, tail_by_op: dict[int, int], temps: dict[int, int]
) -> tuple[OpMemory, ...]:
    graph = model.subgraphs[0]
    uses = []
    for request, owner, offset in zip(
        arena.requests, arena.request_owners, arena.plan.offsets, strict=True
    ):
        tensor_index = owner[1] if owner is not None and owner[0] == 0 else None
        uses.append(
            TensorUse(
                request.label,
                request.size,
                offset,
                request.first_used,
                request.last_used,
                tensor_index,
            )
        )
    result = []
    for op in graph.operators:
        scope = arena.op_scopes.get((0, op.index), -2)  # -2: never reached, nothing live
        live = sorted(
            (u for u in uses if u.first_used <= scope <= u.last_used), key=lambda u: u.offset
        )
        result.append(
            OpMemory(
                index=op.index,
                opcode=op.opcode,
                live_bytes=sum(u.bytes for u in live),
                extent_bytes=max((u.offset + u.bytes for u in live), default=0),
                tail_bytes=tail_by_op.get(op.index, 0),
                prepare_temp_bytes=temps.get(op.index, 0),
                tensors=tuple(live),
            )
        )
    return tuple(result)


def analyze_model(data: bytes, model: ModelInfo, runtime: RuntimeConfig) -> MemoryReport:
    """Analyse an already parsed model for ``runtime``."""
    start = time.perf_counter()
    arena = build_events(model, runtime)
    minimum, failed = minimum_arena(arena.events, runtime.alignment)
    layout_size = align_up(minimum, runtime.alignment)
    final = replay(arena.events, layout_size)
    by_category, by_op = persistent_usage(arena.events, layout_size)
    per_op = _per_op(arena, model, by_op, prepare_temp_peaks(arena.events))
    # The peak operator: the one whose live buffers need the most head (ties: the first).
    peak = max(per_op, key=lambda op: (op.live_bytes, -op.index), default=None)
    report = MemoryReport(
        arena_bytes=minimum,
        head_bytes=final.head_bytes,
        tail_bytes=final.tail_bytes,
        flash=flash_breakdown(model),
        peak_op=(peak.index, peak.opcode) if peak is not None else None,
        peak_tensors=peak.tensors if peak is not None else (),
        per_op=per_op,
        tail_breakdown=by_category,
        limited_by=_describe_limit(arena, model, failed),
        runtime=runtime,
        seconds=time.perf_counter() - start,
        model_bytes=data,
    )
    logger.debug("%s", report.summary())
    return report


def analyze_tflite(
    model: bytes | Path | str,
    *,
    pointer_bytes: int = 8,
    alignment: int = 16,
    runtime: RuntimeConfig | None = None,
) -> MemoryReport:
    """Exact TFLite Micro tensor arena and flash for a .tflite model.

    With the defaults the x86-64 tflite-micro Python package is modelled (what
    :func:`~edgekit.estimate.ground_truth.measure_tflm_arena` measures); ``pointer_bytes=4``
    models a 32-bit firmware build (plain MicroAllocator, no compression). ``runtime``
    overrides both. Raises ModelFileError for unreadable files, UnsupportedOperatorError for
    operators without an allocation table and MemoryModelError for invalid parameters.
    """
    start = time.perf_counter()
    data, info = load_model(model)
    config = runtime if runtime is not None else runtime_for(pointer_bytes, alignment)
    report = analyze_model(data, info, config)
    return _with_seconds(report, time.perf_counter() - start)


def _with_seconds(report: MemoryReport, seconds: float) -> MemoryReport:
    from dataclasses import replace

    return replace(report, seconds=seconds)
