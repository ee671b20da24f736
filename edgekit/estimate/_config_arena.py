"""The arena of a synthesised graph without building TFLite Micro's event list.

``analyze_tflite`` replays every allocation (:func:`edgekit.estimate.arena.build_events`) and
bisects for the smallest arena; this module computes the very same numbers from per-operator
summaries, fast enough for a search loop:

* Each operator's allocations come from the same kernel table (:mod:`edgekit.estimate.tail`),
  summarised once per operator signature (:func:`op_profile`): its options struct, OpData,
  Prepare's persistent bytes, the peak of Prepare's temporaries and its scratch buffers.
* Every replay constraint has the form ``arena >= c + used_tail`` and the tail in use depends
  on the arena size only through ``arena % L`` (``L``: the largest alignment) and only up to
  the first arena-aligned allocation. So ``need(r)`` is ``V(r) + M`` with one maximum ``M``
  over all constraints, and ``minimum_arena``'s own search is re-run against it exactly.
* The memory plan's high-water mark comes from :mod:`edgekit.estimate._config_plan`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edgekit.estimate import runtime as rt
from edgekit.estimate.arena import _MAX_SCRATCH_BUFFERS_PER_OP, _PLANNER_BYTES_PER_BUFFER
from edgekit.estimate.layout import align_down, align_up
from edgekit.estimate.runtime import RuntimeConfig
from edgekit.estimate.tail import OpView, Persist, Scratch, TempTensor, kernel_for
from edgekit.estimate.tflite_file import OperatorInfo, TensorInfo

# (shape, dtype, quantization channels, constant) of one operand; None for an omitted one.
TensorDesc = tuple[tuple[int, ...], str, int, bool]
# (opcode, input descriptions, output description, sorted options)
OpKey = tuple[str, tuple[TensorDesc | None, ...], TensorDesc, tuple[tuple[str, object], ...]]

_BYTES = {"int8": 1, "int32": 4}


@dataclass(frozen=True)
class OpProfile:
    """What one operator allocates in the arena, for one runtime (all sizes in bytes)."""

    builtin: tuple[int, int] | None  # options struct (size, alignment)
    op_data_size: int  # OpData struct size (0: none)
    op_data: int  # OpData, rounded to the arena alignment
    persist: int  # Prepare's persistent buffers, each rounded to the arena alignment
    temp_peak: int  # max of (temporaries' end above the head + persistent bytes so far)
    scratch: tuple[int, ...]  # scratch buffers, rounded to the arena alignment


def _tensor(desc: TensorDesc, index: int) -> TensorInfo:
    shape, dtype, channels, constant = desc
    nbytes = _BYTES[dtype]
    for d in shape:
        nbytes *= d
    return TensorInfo(
        index=index, name="", shape=shape, dtype=dtype, nbytes=nbytes,
        data_bytes=nbytes if constant else 0, buffer=0, is_variable=False,
        quant_channels=channels, scale_count=channels, zero_point_count=channels,
    )  # fmt: skip


@functools.lru_cache(maxsize=65536)
def op_profile(key: OpKey, config: RuntimeConfig) -> OpProfile:
    """Summarise the kernel table's allocations for one operator signature."""
    opcode, inputs, output, options = key
    tensors = [_tensor(output, 0)]
    input_indices = []
    for desc in inputs:
        if desc is None:
            input_indices.append(-1)
        else:
            input_indices.append(len(tensors))
            tensors.append(_tensor(desc, len(tensors)))
    op = OperatorInfo(0, opcode, tuple(input_indices), (0,), options=dict(options))
    kernel = kernel_for(opcode)
    alignment = config.alignment
    builtin = None
    if kernel.builtin_data is not None:
        struct = kernel.builtin_data(config)
        builtin = (struct.size, struct.align)
    op_data_size = kernel.op_data(config).size if kernel.op_data else 0
    tensor_struct = rt.tflite_tensor(config)
    quant_struct = rt.affine_quantization(config)
    request = rt.scratch_buffer_request(config).size  # the head is a multiple of it
    temp = persisted = peak = 0
    scratch = []
    for item in kernel.prepare(OpView(op, tensors), config):
        if isinstance(item, TempTensor):
            parts = [tensor_struct]
            if item.tensor.quant_channels:
                parts += [quant_struct, rt.int_array(item.tensor.quant_channels)]
            for part in parts:
                if request % part.align:
                    raise NotImplementedError("temporaries aligned beyond the head's alignment")
                temp = align_up(temp, part.align) + part.size
                peak = max(peak, temp + persisted)
        elif isinstance(item, Persist):
            if item.align not in (None, alignment):
                raise NotImplementedError(f"{opcode}: persistent buffer aligned to {item.align}")
            persisted += align_up(item.size, alignment)
            peak = max(peak, persisted)
        elif isinstance(item, Scratch):
            scratch.append(align_up(item.size, alignment))
    return OpProfile(
        builtin, op_data_size, align_up(op_data_size, alignment), persisted, peak, tuple(scratch)
    )


@dataclass(frozen=True)
class _Fixed:
    """The allocations that do not depend on the model, for one runtime."""

    pointer: int
    prefix: int  # allocator objects before the options structs (all pointer-aligned)
    eval_tensor: int
    node: int
    request: int  # one scratch-buffer request entry
    request_align: int
    modulus: int  # the arena alignment must be a multiple of it (then it is the period)
    size_t: tuple[int, int]
    info: tuple[int, int]
    io_tensor: tuple[int, ...]  # (size, align) pairs of one quantized input/output tensor


@functools.lru_cache(maxsize=16)
def _fixed(config: RuntimeConfig) -> _Fixed:
    pointer = config.pointer_bytes
    structs = [
        rt.single_arena_buffer_allocator(config),
        rt.greedy_memory_planner(config),
        rt.micro_allocator(config),
        rt.builtin_data_allocator(config),
        rt.subgraph_allocations(config),
    ]
    structs_and_arrays = [*structs, rt.eval_tensor(config), rt.node_and_registration(config)]
    if any(s.size % pointer or s.align != pointer for s in structs_and_arrays):
        raise NotImplementedError("allocator objects are not pointer-aligned")
    request = rt.scratch_buffer_request(config)
    size_t = config.abi.scalar("size_t")
    info = rt.allocation_info(config)
    io = [rt.tflite_tensor(config), rt.affine_quantization(config), rt.int_array(1)]
    modulus = max(pointer, 8)
    return _Fixed(
        pointer=pointer,
        prefix=sum(s.size for s in structs),
        eval_tensor=rt.eval_tensor(config).size,
        node=rt.node_and_registration(config).size,
        request=request.size,
        request_align=request.align,
        modulus=modulus,
        size_t=(size_t.size, size_t.align),
        info=(info.size, info.align),
        io_tensor=tuple(v for s in io for v in (s.size, s.align)),
    )


class ArenaFigures(NamedTuple):  # made once per config estimate: a tuple is cheapest
    arena_bytes: int
    head_bytes: int
    tail_bytes: int


@dataclass(frozen=True)
class TailSummary:
    """What a run of consecutive operators adds to the tail, for one runtime."""

    ops: int
    options_drop: tuple[int, ...]  # options structs' bytes, by tail offset modulo pointer size
    first_op_data: int  # size of its first OpData struct (0: none)
    op_data: int  # all its OpData, each rounded to the arena alignment
    persist: int  # Prepare's persistent bytes
    peak: int  # max of Prepare constraints, relative to the run's start (see summarize)
    scratch: tuple[int, ...]
    scratch_scopes: tuple[int, ...]  # 1 = the run's first op


def summarize(profiles: Sequence[OpProfile], config: RuntimeConfig) -> TailSummary:
    """Fold a run of operators: Prepare's constraints are ``persist so far + scratch-request
    list growth + temporaries`` (and the resized list after each op)."""
    fixed = _fixed(config)
    pointer = fixed.pointer
    drops = []
    for residue in range(pointer):
        x = residue
        for profile in profiles:
            if profile.builtin is not None:
                size, align = profile.builtin
                if pointer % align:
                    raise NotImplementedError("options struct aligned beyond the pointer size")
                x = (x - size) // align * align
        drops.append(residue - x)
    first_op_data = next((p.op_data_size for p in profiles if p.op_data), 0)
    persist = peak = 0
    scratch: list[int] = []
    scopes: list[int] = []
    for scope, profile in enumerate(profiles, start=1):
        growth = fixed.request * len(scratch)
        peak = max(peak, persist + growth + profile.temp_peak)
        persist += profile.persist
        scratch += profile.scratch
        scopes += [scope] * len(profile.scratch)
        peak = max(peak, persist + fixed.request * len(scratch))
    return TailSummary(
        ops=len(profiles),
        options_drop=tuple(drops),
        first_op_data=first_op_data,
        op_data=sum(p.op_data for p in profiles),
        persist=persist,
        peak=peak,
        scratch=tuple(scratch),
        scratch_scopes=tuple(scopes),
    )


# What the arena reads from one run: (options_drop, ops, op_data, first_op_data, peak,
# persist, scratch buffers); see TailSummary.
RunTerms = tuple[tuple[int, ...], int, int, int, int, int, int]


def run_terms(run: TailSummary) -> RunTerms:
    return (
        run.options_drop, run.ops, run.op_data, run.first_op_data, run.peak, run.persist,
        len(run.scratch),
    )  # fmt: skip


def compose_runs(runs: Sequence[RunTerms], config: RuntimeConfig) -> RunTerms:
    """One run's terms for consecutive runs (what :func:`arena_from_terms` reads of them in
    turn, folded ahead of time)."""
    pointer = _fixed(config).pointer
    drops = tuple(_options_drop(runs, start, pointer) for start in range(pointer))
    return (drops, *_fold_runs(runs, _fixed(config).request))


def _options_drop(runs: Sequence[RunTerms], residue: int, pointer: int) -> int:
    """Bytes the options structs take from a tail at ``residue`` (mod the pointer size): a
    chain of align-down steps."""
    total = 0
    for run in runs:
        drop = run[0][residue]
        total += drop
        residue = (residue - drop) % pointer
    return total


def _fold_runs(runs: Sequence[RunTerms], request: int) -> tuple[int, int, int, int, int, int]:
    """(ops, OpData bytes, first OpData, Prepare peak, persistent bytes, scratch buffers) of
    consecutive runs. From the first OpData on the tail is arena-aligned: every Prepare
    constraint is (OpData bytes after the first) + persist so far + scratch-request list + the
    run's own peak; the peak is the largest of the last three."""
    ops = op_data = first_op_data = peak = persisted = scratch_count = 0
    for _, run_ops, run_op_data, run_first_op_data, run_peak, persist, scratch in runs:
        ops += run_ops
        op_data += run_op_data
        if not first_op_data:
            first_op_data = run_first_op_data
        peak = max(peak, persisted + request * scratch_count + run_peak)
        persisted += persist
        scratch_count += scratch
    return ops, op_data, first_op_data, peak, persisted, scratch_count


def arena_figures(
    runs: Sequence[TailSummary],
    high_water: int,
    request_count: int,
    tensor_count: int,
    config: RuntimeConfig,
) -> ArenaFigures:
    """Arena of a single-subgraph model with one input and one output (int8, per-tensor).

    ``runs`` summarise the operators in order; ``high_water`` is the memory plan's head for
    its ``request_count`` planned buffers (the input, every op output, every scratch buffer).
    """
    terms = [run_terms(run) for run in runs]
    return arena_from_terms(terms, high_water, request_count, tensor_count, config)


def arena_from_terms(
    runs: Sequence[RunTerms],
    high_water: int,
    request_count: int,
    tensor_count: int,
    config: RuntimeConfig,
) -> ArenaFigures:
    """:func:`arena_figures` from each run's :func:`run_terms` (kept by the fast path)."""
    fixed = _fixed(config)
    alignment = config.alignment
    pointer = fixed.pointer
    if alignment % fixed.modulus:
        raise NotImplementedError(f"alignment {alignment} below 8 or the pointer size")
    request = fixed.request

    options_drop = _options_drop(runs, 0, pointer)
    op_count, op_data, first_op_data, prepare_peak, persisted, scratch_count = _fold_runs(
        runs, request
    )
    if not first_op_data:
        raise NotImplementedError("model without any OpData")
    fixed_drop = fixed.prefix + fixed.eval_tensor * tensor_count + fixed.node * op_count
    base_head = request * _MAX_SCRATCH_BUFFERS_PER_OP
    used = op_data - align_up(first_op_data, alignment)
    # (the last OpData must fit above the scratch-request list)
    most = used + base_head + prepare_peak
    used += persisted
    head = base_head + request * scratch_count

    # FinishModelAllocation: a short replay relative to the (arena-aligned) tail reached; the
    # tail only grows, so each persistent allocation's constraint is checked where it is the
    # largest (after the scratch pointers; after the input's and output's TfLiteTensor).
    rel = 0  # tail relative to the tail after Prepare
    if scratch_count:
        rel = (rel - pointer * scratch_count) // pointer * pointer
        most = max(most, used - rel + head)
    temp = head
    size, align = fixed.size_t
    temp = align_up(temp, align) + size
    most = max(most, used - rel + temp)
    size, align = fixed.info
    temp = align_up(temp, align) + size * (tensor_count + scratch_count)
    most = max(most, used - rel + temp)
    plan_bytes = _PLANNER_BYTES_PER_BUFFER * request_count
    most = max(
        most, used - align_down(rel, alignment) + align_up(temp, alignment) + plan_bytes
    )
    io = fixed.io_tensor
    for _ in range(2):  # the input's and the output's TfLiteTensor
        rel = (rel - pointer) // alignment * alignment
        for i in range(0, len(io), 2):
            rel = (rel - io[i]) // io[i + 1] * io[i + 1]
    most = max(most, used - rel + high_water)
    total = used - rel  # tail bytes after the first OpData

    # An arena of size a fits iff a - used_before(a) >= most, where used_before (the tail up
    # to and including the first OpData) depends on a only through a % alignment. That
    # left side is nondecreasing in a (see search_arena), so minimum_arena's search finds
    # the smallest fitting a above its starting point.
    before = fixed_drop + options_drop + first_op_data
    low = max(0, high_water + total - alignment - _aligned_part(0, pointer, alignment, before))
    arena = max(low + 1, _smallest_fit(most, pointer, alignment, before))
    return ArenaFigures(arena, high_water, total - _aligned_part(0, pointer, alignment, before))


def _aligned_part(residue: int, pointer: int, alignment: int, before: int) -> int:
    """``residue - used_before(residue)``: minus the bytes used up to the first OpData,
    rounded to the arena alignment, for an arena of this residue modulo the alignment."""
    return (residue // pointer * pointer - before) // alignment * alignment


def _smallest_fit(most: int, pointer: int, alignment: int, before: int) -> int:
    """The smallest a >= 0 with ``alignment * (a // alignment) + _aligned_part(a % alignment)
    >= most``; ``_aligned_part`` grows with the residue and by at most ``alignment`` over
    one period, so the left side is nondecreasing in a."""
    top = _aligned_part(alignment - 1, pointer, alignment, before)
    blocks = max(0, -(-(most - top) // alignment))
    for residue in range(0, alignment, pointer):
        if alignment * blocks + _aligned_part(residue, pointer, alignment, before) >= most:
            return alignment * blocks + residue
    raise AssertionError("unreachable: the last residue fits")
