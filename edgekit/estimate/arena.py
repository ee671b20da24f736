"""Replay TFLite Micro's arena allocations for one model and find the smallest arena.

TFLite Micro carves one arena from both ends (``SingleArenaBufferAllocator``): persistent
allocations grow down from the tail, the resizable head (scratch-request list during Prepare,
the planned tensor memory afterwards) grows up from the start, and temporary allocations sit
just above the head until the next reset. :func:`build_events` lists every allocation
``MicroInterpreter::AllocateTensors`` makes for a model, in order (MicroAllocator
construction, StartModelAllocation, builtin-data parsing, kernel Init, kernel Prepare,
FinishModelAllocation with the memory plan, the input/output TfLiteTensors); :func:`replay`
runs them against an arena of a given size with TFLM's exact pointer arithmetic, and
:func:`minimum_arena` bisects for the smallest size that succeeds. The minimum can exceed the
final head + tail when a transient step (a Prepare's temporaries, the planner's scratch) needs
more than the finished layout, and can be below it by the tail's alignment padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from edgekit.estimate import runtime as rt
from edgekit.estimate.layout import CType, align_down, align_up
from edgekit.estimate.planner import ONLINE, BufferRequest, Plan, plan_greedy, tensor_lifetimes
from edgekit.estimate.runtime import RuntimeConfig
from edgekit.estimate.tail import OpView, Persist, Scratch, TempTensor, kernel_for
from edgekit.estimate.tflite_file import ModelInfo, TensorInfo

_MAX_SCRATCH_BUFFERS_PER_OP = 12  # kMaxScratchBuffersPerOp (micro_allocator.cc)
_PLANNER_BYTES_PER_BUFFER = 40  # GreedyMemoryPlanner::per_buffer_size(): 16 + 4 + 4 + 12 + 4

EventKind = Literal["persist", "temp", "resize", "reset", "plan"]


@dataclass(frozen=True)
class ArenaEvent:
    """One step of the allocation sequence.

    ``persist``/``temp``: allocate ``size`` bytes at ``align``; ``resize``: set the head to
    ``size`` (TFLM requires temporaries to be reset first); ``reset``: drop temporaries;
    ``plan``: the memory planner takes all free memory and needs ``size`` bytes of it.
    """

    kind: EventKind
    size: int
    align: int
    category: str
    op: int | None = None  # operator index in subgraph 0 (or the subgraph's own index)


@dataclass(frozen=True)
class ArenaModel:
    """Everything the arena of one model depends on, computed once per analysis."""

    events: tuple[ArenaEvent, ...]
    requests: tuple[BufferRequest, ...]  # memory-plan requests: tensors, then scratch
    request_owners: tuple[tuple[int, int] | None, ...]  # (subgraph, tensor) or None=scratch
    plan: Plan
    scratch_ops: tuple[tuple[int, int], ...]  # (subgraph, op) per scratch request
    op_scopes: dict[tuple[int, int], int]  # allocation scope of each (subgraph, op)
    persistent_by_category: dict[str, int] = field(default_factory=dict)
    persistent_by_op: dict[int, int] = field(default_factory=dict)


def _temp_tensor(tensor: TensorInfo, config: RuntimeConfig, op: int | None) -> list[ArenaEvent]:
    struct = rt.tflite_tensor(config)
    events = [ArenaEvent("temp", struct.size, struct.align, "temp TfLiteTensor", op)]
    if tensor.quant_channels:
        quant = rt.affine_quantization(config)
        zero_points = rt.int_array(tensor.quant_channels)
        events += [
            ArenaEvent("temp", quant.size, quant.align, "temp quantization", op),
            ArenaEvent("temp", zero_points.size, zero_points.align, "temp quantization", op),
        ]
    return events


def _persist(struct: CType, category: str, op: int | None = None, count: int = 1) -> ArenaEvent:
    return ArenaEvent("persist", struct.size * count, struct.align, category, op)


def _io_tensor(tensor: TensorInfo, config: RuntimeConfig) -> list[ArenaEvent]:
    events = [_persist(rt.tflite_tensor(config), "input/output TfLiteTensor")]
    if tensor.quant_channels:
        events += [
            _persist(rt.affine_quantization(config), "input/output quantization"),
            _persist(rt.int_array(tensor.quant_channels), "input/output quantization"),
        ]
    return events


def _memory_plan_requests(
    model: ModelInfo, scratch: Sequence[tuple[int, int, int]], config: RuntimeConfig
) -> tuple[list[BufferRequest], list[tuple[int, int] | None], dict[tuple[int, int], int]]:
    lifetimes, scratch_scopes, op_scopes = tensor_lifetimes(model, [(s, o) for s, o, _ in scratch])
    offline = model.offline_offsets
    requests: list[BufferRequest] = []
    owners: list[tuple[int, int] | None] = []
    flat_index = 0
    for s, graph in enumerate(model.subgraphs):
        for tensor in graph.tensors:
            offline_offset = offline[flat_index] if offline is not None else ONLINE
            flat_index += 1
            if tensor.is_constant or tensor.is_variable or tensor.nbytes == 0:
                continue  # needs_allocating is false
            life = lifetimes[(s, tensor.index)]
            requests.append(
                BufferRequest(
                    align_up(tensor.nbytes, config.alignment),
                    life.first_created,
                    life.last_used,
                    offline_offset,
                    tensor.name,
                )
            )
            owners.append((s, tensor.index))
    for (s, o, size), (first, last) in zip(scratch, scratch_scopes, strict=True):
        opcode = model.subgraphs[s].operators[o].opcode
        requests.append(
            BufferRequest(
                align_up(size, config.alignment),
                first,
                last,
                ONLINE,
                f"scratch of op {o} ({opcode})",
            )
        )
        owners.append(None)
    return requests, owners, op_scopes


def build_events(model: ModelInfo, config: RuntimeConfig) -> ArenaModel:
    """The full allocation sequence of ``MicroInterpreter::AllocateTensors`` for ``model``."""
    c = config
    events: list[ArenaEvent] = []
    request = rt.scratch_buffer_request(c)
    graphs = model.subgraphs

    # Interpreter construction: allocator objects live at the very end of the arena.
    events += [
        _persist(rt.single_arena_buffer_allocator(c), "allocator objects"),
        _persist(rt.greedy_memory_planner(c), "allocator objects"),
        _persist(rt.micro_allocator(c), "allocator objects"),
    ]
    # StartModelAllocation
    events += [
        _persist(rt.builtin_data_allocator(c), "allocator objects"),
        ArenaEvent(
            "resize", request.size * _MAX_SCRATCH_BUFFERS_PER_OP, request.align, "scratch requests"
        ),
        _persist(rt.subgraph_allocations(c), "allocator objects", count=len(graphs)),
    ]
    events += [
        _persist(rt.eval_tensor(c), "TfLiteEvalTensor array", count=len(g.tensors)) for g in graphs
    ]
    events += [
        _persist(rt.node_and_registration(c), "NodeAndRegistration array", count=len(g.operators))
        for g in graphs
    ]
    # Builtin options (parsed for every operator first), then every kernel's Init. Per-op
    # attribution (ArenaEvent.op) is kept for the main subgraph only.
    for s, graph in enumerate(graphs):
        for op in graph.operators:
            kernel = kernel_for(op.opcode)
            owner = op.index if s == 0 else None
            if kernel.builtin_data is not None:
                events.append(_persist(kernel.builtin_data(c), "builtin options", owner))
    for s, graph in enumerate(graphs):
        for op in graph.operators:
            kernel = kernel_for(op.opcode)
            owner = op.index if s == 0 else None
            if kernel.op_data is not None:
                size = kernel.op_data(c).size
                events.append(ArenaEvent("persist", size, c.alignment, "kernel OpData", owner))
    # Prepare, operator by operator; temporaries are reset and the scratch-request list is
    # resized to (requests so far + 12) after each one.
    scratch: list[tuple[int, int, int]] = []
    for s, graph in enumerate(graphs):
        for op in graph.operators:
            view = OpView(op, graph.tensors)
            owner = op.index if s == 0 else None
            for item in kernel_for(op.opcode).prepare(view, c):
                if isinstance(item, TempTensor):
                    events += _temp_tensor(item.tensor, c, owner)
                elif isinstance(item, Persist):
                    align = item.align or c.alignment
                    events.append(ArenaEvent("persist", item.size, align, "kernel buffers", owner))
                elif isinstance(item, Scratch):
                    scratch.append((s, op.index, item.size))
            events.append(ArenaEvent("reset", 0, 1, "prepare temporaries", owner))
            events.append(
                ArenaEvent(
                    "resize",
                    request.size * (len(scratch) + _MAX_SCRATCH_BUFFERS_PER_OP),
                    request.align,
                    "scratch requests",
                    owner,
                )
            )
    # FinishModelAllocation
    if scratch:
        events.append(
            _persist(rt.scratch_buffer_handle(c), "scratch buffer handles", count=len(scratch))
        )
    for graph in graphs:
        for tensor in graph.tensors:
            if tensor.is_variable:
                events.append(
                    ArenaEvent("persist", tensor.nbytes, c.alignment, "variable tensors")
                )
    requests, owners, op_scopes = _memory_plan_requests(model, scratch, c)
    plan = plan_greedy(requests)
    size_t = c.abi.scalar("size_t")
    info = rt.allocation_info(c)
    total_tensors = sum(len(g.tensors) for g in graphs)
    events += [
        ArenaEvent("temp", size_t.size * len(graphs), size_t.align, "memory planning"),
        ArenaEvent(
            "temp", info.size * (total_tensors + len(scratch)), info.align, "memory planning"
        ),
        ArenaEvent(
            "plan", _PLANNER_BYTES_PER_BUFFER * len(requests), c.alignment, "memory planning"
        ),
        ArenaEvent("reset", 0, 1, "memory planning"),
        ArenaEvent("resize", 0, 1, "memory planning"),
        ArenaEvent("resize", plan.high_water, c.alignment, "planned tensors (head)"),
    ]
    # The interpreter's input/output TfLiteTensor structs (subgraph 0).
    main = graphs[0]
    for indices in (main.inputs, main.outputs):
        pointer = c.abi.scalar("ptr")
        events.append(
            ArenaEvent(
                "persist", pointer.size * len(indices), c.alignment, "input/output TfLiteTensor"
            )
        )
        for index in indices:
            events += _io_tensor(main.tensors[index], c)

    return ArenaModel(
        events=tuple(events),
        requests=tuple(requests),
        request_owners=tuple(owners),
        plan=plan,
        scratch_ops=tuple((s, o) for s, o, _ in scratch),
        op_scopes=op_scopes,
    )


@dataclass(frozen=True)
class ReplayResult:
    ok: bool
    head_bytes: int  # head in use at the end
    tail_bytes: int  # persistent bytes at the end (arena end minus tail pointer)
    failed_at: int | None = None  # index of the first event that did not fit


def replay(events: Sequence[ArenaEvent], arena_size: int) -> ReplayResult:
    """Run ``events`` against an arena of ``arena_size`` bytes starting 16-byte aligned."""
    head = temp = 0
    tail = arena_size
    for index, event in enumerate(events):
        if event.kind == "persist":
            result = align_down(tail - event.size, event.align)
            if result < head:
                return ReplayResult(False, head, arena_size - tail, index)
            tail = result
        elif event.kind == "temp":
            start = align_up(temp, event.align)
            if tail - start < event.size:
                return ReplayResult(False, head, arena_size - tail, index)
            temp = start + event.size
        elif event.kind == "resize":
            if tail - align_up(0, event.align) < event.size:
                return ReplayResult(False, head, arena_size - tail, index)
            head = temp = event.size
        elif event.kind == "reset":
            temp = head
        elif event.kind == "plan":
            available = align_down(tail, event.align) - align_up(temp, event.align)
            if available < event.size:
                return ReplayResult(False, head, arena_size - tail, index)
            temp = align_up(temp, event.align) + available
    return ReplayResult(True, head, arena_size - tail)


def minimum_arena(events: Sequence[ArenaEvent], alignment: int = 16) -> tuple[int, int | None]:
    """Smallest arena size for which every event fits, and the event that limits it."""
    # The finished layout (head + tail with an aligned end) is within `alignment` of the
    # answer unless a transient step needs more, so search outward from it.
    roomy = 1 << 40
    finished = replay(events, roomy)
    low = max(0, finished.head_bytes + finished.tail_bytes - alignment)
    step = alignment
    high = low + step
    while not replay(events, high).ok:
        low, step = high, step * 2
        high = low + step
    while high - low > 1:
        middle = (low + high) // 2
        if replay(events, middle).ok:
            high = middle
        else:
            low = middle
    return high, replay(events, high - 1).failed_at


def persistent_usage(
    events: Sequence[ArenaEvent], arena_size: int
) -> tuple[dict[str, int], dict[int, int]]:
    """Tail bytes (alignment padding included) by category and by operator index."""
    tail = arena_size
    by_category: dict[str, int] = {}
    by_op: dict[int, int] = {}
    for event in events:
        if event.kind != "persist":
            continue
        new_tail = align_down(tail - event.size, event.align)
        used = tail - new_tail
        tail = new_tail
        by_category[event.category] = by_category.get(event.category, 0) + used
        if event.op is not None:
            by_op[event.op] = by_op.get(event.op, 0) + used
    return by_category, by_op


def prepare_temp_peaks(events: Sequence[ArenaEvent]) -> dict[int, int]:
    """Bytes of temporaries each operator's Prepare holds at once (alignment included)."""
    peaks: dict[int, int] = {}
    temp = 0
    for event in events:
        if event.kind == "temp" and event.op is not None:
            temp = align_up(temp, event.align) + event.size
            peaks[event.op] = max(peaks.get(event.op, 0), temp)
        elif event.kind == "reset":
            temp = 0
    return peaks
