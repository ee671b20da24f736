"""A config's arena from its pieces' bundles, added up in compiled code.

``_config_fast`` keeps every piece it has summarised (a *bundle*) in a :class:`BundleTable`:
numbers only, one row per bundle. A config is then a list of row numbers, and one compiled
call (:func:`_combine`) does what costs most in Python per config: the sums of tensors,
requests and flash, the constants counted once per model (merged and shared by key), the tail
terms folded in order, the memory plan of the whole chain (as the flat planner makes it) and
:func:`edgekit.estimate._config_arena.arena_from_terms`'s arithmetic. A two-stage patched
piece, made anew per config, comes as extra arrays; or, once its later pieces have rows, the
whole config is one call (:func:`_patched_combine`: the rows found by key in a
:class:`RowIndex`, the patched part assembled, the whole combined). Used for tiny-cnn and
tiny-vit (see ``_config_fast.fast_figures``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

from edgekit.estimate import _flat_plan, _patched_kernel
from edgekit.estimate._flat_plan import JIT_OPTIONS
from edgekit.estimate._patched_kernel import ASSEMBLED, EMPTY, grown, slot
from edgekit.spaces.tiny_cnn import MAX_DEPTH, STAGE_STRIDES

logger = logging.getLogger(__name__)

# BundleTable.info columns
TENSORS, REQUESTS, LAYOUTS, OPS, OP_DATA, FIRST_OP_DATA, PEAK, PERSIST, SCRATCH = range(9)
INFO_COLUMNS = 9
KEY_COLUMNS = 3  # a counted-once constant's flash: bytes, int64 vectors, fillers

# A tiny-cnn block's key (see _config_fast._cnn_keys), an int64: its input map size (16 bits),
# kernel (16 bits; 0: fused), stride (8 bits) and the number of its other fields (channels,
# ranks: see _config_fast._block_fields) from these bits up.
KERNEL_SHIFT, STRIDE_SHIFT, NUMBER_SHIFT = 16, 32, 40
EXPANDS = 16  # a block's fields are found by its expand ratio where it is below this
MISSING = -4  # _patched_combine's status: a piece after the patched part has no row yet


def head_key(size: int, channels: int, classes: int) -> int:
    """A tiny-cnn head's key in :class:`RowIndex` (negative: no block's)."""
    return -1 - (size | channels << 16 | classes << 32)


class BundleTable:
    """Bundles of one runtime as rows of int arrays (see the module docstring)."""

    def __init__(self, pointer: int, flash_columns: int) -> None:
        self.count = 0
        self.info = np.zeros((256, INFO_COLUMNS), np.int64)
        self.drops = np.zeros((256, pointer), np.int64)
        self.flash = np.zeros((256, flash_columns), np.int64)
        self.key_start = np.zeros(257, np.int64)  # row i's keys: key_start[i]:key_start[i+1]
        self.keys = np.zeros(1024, np.int64)  # key number * 2 + (0 merged, 1 shared)
        # Each key's flash, with the key: equal keys of different configs may differ (a
        # layer's scale vector is keyed by its name, whatever its channels).
        self.key_flash = np.zeros((1024, KEY_COLUMNS), np.int64)
        self.column_start = np.zeros(257, np.int64)
        self.columns = np.zeros((1024, 4), np.int64)  # planner columns, one row each
        self.first_opcodes: list[str] = []

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The table as :func:`_combine` reads it, from ``info`` to ``columns`` (read anew
        each time: :meth:`add` may replace the arrays)."""
        return (
            self.info, self.drops, self.flash, self.key_start, self.keys, self.key_flash,
            self.column_start, self.columns,
        )  # fmt: skip

    def add(
        self,
        info: tuple[int, ...],
        drops: tuple[int, ...],
        flash: list[int],
        keys: list[tuple[int, int, list[int]]],
        columns: np.ndarray,
        first_opcode: str,
    ) -> int:
        """A new row: ``keys`` (key number, 0 merged / 1 shared, its flash columns)."""
        row = self.count
        self.info = grown(self.info, row + 1)
        self.drops = grown(self.drops, row + 1)
        self.flash = grown(self.flash, row + 1)
        self.key_start = grown(self.key_start, row + 2)
        self.column_start = grown(self.column_start, row + 2)
        self.info[row] = info
        self.drops[row] = drops
        self.flash[row] = flash
        start = self.key_start[row]
        end = start + len(keys)
        self.keys = grown(self.keys, end)
        self.key_flash = grown(self.key_flash, end)
        if keys:
            self.keys[start:end] = [2 * number + kind for number, kind, _ in keys]
            self.key_flash[start:end] = [key_flash for _, _, key_flash in keys]
        self.key_start[row + 1] = end
        start = self.column_start[row]
        self.columns = grown(self.columns, start + columns.shape[1])
        self.columns[start : start + columns.shape[1]] = columns.T
        self.column_start[row + 1] = start + columns.shape[1]
        self.first_opcodes.append(first_opcode)
        self.count += 1
        return row


class RowIndex:
    """The rows of a :class:`BundleTable` by int key, in an open-addressing table compiled
    code reads (see :func:`_later_rows`)."""

    def __init__(self, capacity: int = 1024) -> None:
        """``capacity``: keys to hold before the table grows (growing re-adds every key)."""
        slots = 1024
        while slots < 2 * capacity:
            slots *= 2
        self.keys = np.full(slots, EMPTY, np.int64)
        self.rows = np.zeros(slots, np.int64)
        self.count = 0

    def add(self, key: int, row: int) -> None:
        if 2 * (self.count + 1) > len(self.keys):
            keys, rows = self.keys, self.rows
            self.keys = np.full(2 * len(keys), EMPTY, np.int64)
            self.rows = np.zeros(2 * len(keys), np.int64)
            for old, value in zip(keys.tolist(), rows.tolist(), strict=True):
                if old != EMPTY:
                    at = slot(self.keys, old)
                    self.keys[at] = old
                    self.rows[at] = value
        at = slot(self.keys, key)
        if self.keys[at] != key:
            self.keys[at] = key
            self.rows[at] = row
            self.count += 1


_slot = slot  # what _combine calls: compiled with it (see kernel)
_head_key = head_key  # what _later_rows calls (see patched_kernel)


def _count_once(seen: np.ndarray, key: int, columns: np.ndarray, total: np.ndarray) -> int:
    """Add a constant's flash ``columns`` to ``total`` unless its key is in ``seen`` (then
    recorded); returns 1 for a merged constant counted now (a tensor), else 0."""
    at = _slot(seen, key)
    if seen[at] == key:
        return 0
    seen[at] = key
    total[:3] += columns
    return 1 - (key & 1)


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _aligned_part(residue: int, pointer: int, alignment: int, before: int) -> int:
    return (residue // pointer * pointer - before) // alignment * alignment


def _combine(
    rows: np.ndarray,
    info: np.ndarray,
    drops: np.ndarray,
    flash: np.ndarray,
    key_start: np.ndarray,
    keys: np.ndarray,
    key_flash: np.ndarray,
    column_start: np.ndarray,
    columns: np.ndarray,
    first_info: np.ndarray,
    first_drops: np.ndarray,
    first_flash: np.ndarray,
    first_keys: np.ndarray,
    first_key_flash: np.ndarray,
    first_columns: np.ndarray,
    input_bytes: int,
    input_flash: np.ndarray,
    fixed: np.ndarray,
    operator_bytes: np.ndarray,
    first_opcode: int,
) -> np.ndarray:
    """(arena, head, tail, tensors, layouts, operators, their tables' bytes, their opcodes
    as a bit set, bytes, int64 vectors, fillers) of the chain ``rows`` after the optional
    first piece (``first_info`` empty: none; its columns (4, n), its keys and their flash as
    rows), planned as the flat planner does, and after the model's input (``input_bytes``,
    its flash ``input_flash``). ``fixed``: see :func:`fixed_terms`; ``operator_bytes``: the
    table of an operator per opcode (row 1: as the first opcode's). An arena of -1: the
    model has no OpData (arena_from_terms raises)."""
    pointer, alignment = fixed[0], fixed[1]
    has_first = 1 if len(first_info) else 0
    # Sums, and the tail's runs folded in order (see _config_arena.compose_runs).
    tensors = requests = 1  # the input
    layouts = 0
    total_flash = input_flash.copy()
    residue = 0
    options_drop = op_count = op_data = first_op_data = peak = persisted = scratch = 0
    request = fixed[5]
    for p in range(has_first + len(rows)):
        if p < has_first:
            row_info, drop = first_info, first_drops[residue]
            total_flash += first_flash
        else:
            row = rows[p - has_first]
            row_info, drop = info[row], drops[row, residue]
            total_flash += flash[row]
        tensors += row_info[TENSORS]
        requests += row_info[REQUESTS]
        layouts |= row_info[LAYOUTS]
        options_drop += drop
        residue = (residue - drop) % pointer
        op_count += row_info[OPS]
        op_data += row_info[OP_DATA]
        if first_op_data == 0:
            first_op_data = row_info[FIRST_OP_DATA]
        peak = max(peak, persisted + request * scratch + row_info[PEAK])
        persisted += row_info[PERSIST]
        scratch += row_info[SCRATCH]
    # Constants counted once per model: the first piece's, then the rows'.
    key_count = len(first_keys)
    for row in rows:
        key_count += key_start[row + 1] - key_start[row]
    slots = 16
    while slots < 4 * key_count:
        slots *= 2
    seen = np.full(slots, EMPTY, np.int64)
    merged = 0
    for k in range(len(first_keys)):
        merged += _count_once(seen, first_keys[k], first_key_flash[k], total_flash)
    for row in rows:
        for k in range(key_start[row], key_start[row + 1]):
            merged += _count_once(seen, keys[k], key_flash[k], total_flash)
    tensors += merged
    count = first_columns.shape[1]
    for p in range(len(rows)):
        count += column_start[rows[p] + 1] - column_start[rows[p]]
    chain = np.empty((4, count), np.int64)
    at = 0
    for c in range(first_columns.shape[1]):
        chain[:, at] = first_columns[:, c]
        at += 1
    for p in range(len(rows)):
        for c in range(column_start[rows[p]], column_start[rows[p] + 1]):
            chain[:, at] = columns[c]
            at += 1
    high_water = _greedy_high_water(chain, input_bytes)
    # _config_arena.arena_from_terms, step for step.
    prefix, eval_tensor, node, request = fixed[2], fixed[3], fixed[4], fixed[5]
    size_t_size, size_t_align, info_size, info_align = fixed[6], fixed[7], fixed[8], fixed[9]
    max_scratch, planner_bytes = fixed[10], fixed[11]
    fixed_drop = prefix + eval_tensor * tensors + node * op_count
    base_head = request * max_scratch
    used = op_data - _align_up(first_op_data, alignment)
    most = used + base_head + peak
    used += persisted
    head = base_head + request * scratch
    rel = 0
    if scratch:
        rel = (rel - pointer * scratch) // pointer * pointer
        most = max(most, used - rel + head)
    temp = _align_up(head, size_t_align) + size_t_size
    most = max(most, used - rel + temp)
    temp = _align_up(temp, info_align) + info_size * (tensors + scratch)
    most = max(most, used - rel + temp)
    plan_bytes = planner_bytes * requests
    most = max(most, used - rel // alignment * alignment + _align_up(temp, alignment) + plan_bytes)
    for _ in range(2):  # the input's and the output's TfLiteTensor
        rel = (rel - pointer) // alignment * alignment
        for i in range(12, 18, 2):
            rel = (rel - fixed[i]) // fixed[i + 1] * fixed[i + 1]
    most = max(most, used - rel + high_water)
    total = used - rel
    before = fixed_drop + options_drop + first_op_data
    low = max(0, high_water + total - alignment - _aligned_part(0, pointer, alignment, before))
    top = _aligned_part(alignment - 1, pointer, alignment, before)
    blocks = max(0, -(-(most - top) // alignment))
    fit = -1
    for r in range(0, alignment, pointer):
        if alignment * blocks + _aligned_part(r, pointer, alignment, before) >= most:
            fit = alignment * blocks + r
            break
    out = np.empty(11, np.int64)
    out[0] = max(low + 1, fit)
    out[1] = high_water
    out[2] = total - _aligned_part(0, pointer, alignment, before)
    out[3] = tensors
    out[4] = layouts
    ops = operators = mask = 0
    for i in range(len(total_flash) - 3):
        count = total_flash[3 + i]
        if count:
            mask |= 1 << i
            ops += count
            operators += count * operator_bytes[1 if i == first_opcode else 0, i]
    out[5] = ops
    out[6] = operators
    out[7] = mask
    out[8:] = total_flash[:3]
    if first_op_data == 0:  # no OpData: arena_from_terms raises, the caller falls back
        out[0] = -1
    return out


_assemble = _patched_kernel._assemble  # what _patched_combine calls (see patched_kernel)


def _patched_combine(
    later: tuple,
    assembly: tuple,
    template_opcodes: np.ndarray,
    concat_opcode: int,
    table: tuple,
    input_bytes: int,
    input_flash: np.ndarray,
    fixed: np.ndarray,
    operator_bytes: np.ndarray,
) -> np.ndarray:
    """A two-stage patched config in one call: the rows of its pieces after the patched part
    found (:func:`_later_rows`'s arguments: ``later``), the patched part assembled
    (``_patched_kernel._assemble``'s arguments: ``assembly``) and the whole combined
    (:func:`_combine`; ``table``: its arguments from ``info`` to ``columns``): (status, the
    model's first opcode, then :func:`_combine`'s figures when the status is ``ASSEMBLED``;
    else MISSING, a piece without a row, or the assembly's). ``template_opcodes``: each
    template's first opcode, ``concat_opcode``: the CONCATENATIONs' (indices into
    ``operator_bytes``'s columns)."""
    out = np.zeros(13, np.int64)
    rows = _later_rows(*later)
    if len(rows) == 0:
        out[0] = MISSING
        return out
    status, first, columns, info, dropped, flash, keys, key_flash = _assemble(*assembly)
    out[0] = status
    if status != ASSEMBLED:
        return out
    opcode = template_opcodes[first] if first >= 0 else concat_opcode
    out[1] = opcode
    out[2:] = _combine_compiled(
        rows, *table, info, dropped, flash, keys, key_flash, columns, input_bytes, input_flash,
        fixed, operator_bytes, opcode,
    )
    return out


def _later_rows(
    first_stage: int,
    resolution: int,
    strides: tuple[int, int],
    classes: int,
    fused: int,
    depths: tuple[int, ...],
    kernels: tuple[int, ...],
    expands: tuple[int, ...],
    block_fields: np.ndarray,
    index_keys: np.ndarray,
    index_rows: np.ndarray,
) -> np.ndarray:
    """The rows of a tiny-cnn's pieces after its first (the blocks of stages ``first_stage``
    on, then the head), found in a :class:`RowIndex` (``index_keys``, ``index_rows``) by the
    keys ``_config_fast._cnn_keys`` gives them, from the config's resolution, (stem, first
    stage) strides, classes, fused stages, depths, kernel sizes and expand ratios.
    ``block_fields``: the numbers of the blocks' fields (shifted) at the config's width, rank
    ratio and fused stages, by [(stage * 2 + later block) * EXPANDS + expand ratio] (-1: not
    worked out yet), then the head's channels. Empty when a piece is not in the index."""
    count = 1  # the head
    for stage in range(first_stage, len(depths)):
        count += depths[stage]
    rows = np.empty(count, np.int64)
    found = 0
    size = -(-resolution // strides[0])
    for stage in range(len(depths)):
        stride = strides[1] if stage == 0 else STAGE_STRIDES[stage]
        for block in range(depths[stage]):
            if stage >= first_stage:
                i = MAX_DEPTH * stage + block
                expand = expands[i]
                if expand <= 0 or expand >= EXPANDS:
                    return rows[:0]
                number = block_fields[(2 * stage + (block > 0)) * EXPANDS + expand]
                if number < 0:
                    return rows[:0]
                kernel = 0 if stage < fused else kernels[i]
                key = size | kernel << KERNEL_SHIFT | stride << STRIDE_SHIFT | number
                at = _slot(index_keys, key)
                if index_keys[at] != key:
                    return rows[:0]
                rows[found] = index_rows[at]
                found += 1
            size = -(-size // stride)
            stride = 1
    key = _head_key(size, block_fields[len(block_fields) - 1], classes)
    at = _slot(index_keys, key)
    if index_keys[at] != key:
        return rows[:0]
    rows[found] = index_rows[at]
    return rows


def _found_combine(
    first_row: int,
    later: tuple,
    table: tuple,
    input_bytes: int,
    input_flash: np.ndarray,
    fixed: np.ndarray,
    operator_bytes: np.ndarray,
    first_opcode: int,
) -> np.ndarray:
    """:func:`_combine` of the chain ``first_row`` and then the rows :func:`_later_rows`
    finds (its arguments: ``later``), in one call: (status 0 and the figures, or MISSING)."""
    out = np.zeros(12, np.int64)
    found = _later_rows(*later)
    if len(found) == 0:
        out[0] = MISSING
        return out
    rows = np.empty(1 + len(found), np.int64)
    rows[0] = first_row
    rows[1:] = found
    none = np.empty(0, np.int64)
    out[1:] = _combine_compiled(
        rows, *table, none, none, none, none, np.empty((0, 3), np.int64),
        np.empty((4, 0), np.int64), input_bytes, input_flash, fixed, operator_bytes, first_opcode,
    )  # fmt: skip
    return out


def fixed_terms(fixed: object, alignment: int, max_scratch: int, planner_bytes: int) -> np.ndarray:
    """The runtime's constants :func:`_combine` reads, from ``_config_arena._fixed``."""
    values = [
        fixed.pointer, alignment, fixed.prefix, fixed.eval_tensor, fixed.node,  # type: ignore[attr-defined]
        fixed.request, *fixed.size_t, *fixed.info, max_scratch, planner_bytes,  # type: ignore[attr-defined]
        *fixed.io_tensor,  # type: ignore[attr-defined]
    ]  # fmt: skip
    assert len(values) == 18, values
    return np.array(values, np.int64)


_greedy_high_water = _flat_plan.greedy_high_water  # what _combine calls (see kernel)


@functools.cache
def kernel() -> Callable | None:
    """:func:`_combine` compiled (None without numba)."""
    planner = _flat_plan.kernel()  # compiled, or None without numba
    if planner is None:
        return None
    from numba import njit

    try:
        # _combine finds these by their global names: compiled code must find them compiled.
        global _greedy_high_water, _slot, _count_once, _align_up, _aligned_part
        _greedy_high_water = planner
        _slot = njit(**JIT_OPTIONS, inline="always")(slot)
        _count_once = njit(**JIT_OPTIONS, inline="always")(_count_once)
        _align_up = njit(**JIT_OPTIONS, inline="always")(_align_up)
        _aligned_part = njit(**JIT_OPTIONS, inline="always")(_aligned_part)
        return njit(**JIT_OPTIONS)(_combine)
    except Exception as e:  # numba's errors have no common root
        logger.warning("the compiled combination is unavailable (%s)", e)
        return None


_combine_compiled = _combine  # what _patched_combine calls (see patched_kernel)


@functools.cache
def patched_kernel() -> Callable | None:
    """:func:`_patched_combine` compiled (None without numba)."""
    combine, assemble = kernel(), _patched_kernel.kernel()
    if combine is None or assemble is None:
        return None
    from numba import njit

    try:
        # _patched_combine finds these by their global names (see kernel)
        global _assemble, _combine_compiled, _later_rows, _head_key
        _assemble, _combine_compiled = assemble, combine
        _head_key = njit(**JIT_OPTIONS, inline="always")(head_key)
        _later_rows = njit(**JIT_OPTIONS)(_later_rows)
        return njit(**JIT_OPTIONS)(_patched_combine)
    except Exception as e:  # numba's errors have no common root
        logger.warning("the compiled patched combination is unavailable (%s)", e)
        return None


@functools.cache
def found_kernel() -> Callable | None:
    """:func:`_found_combine` compiled (None without numba)."""
    if patched_kernel() is None:  # (it compiles _later_rows and the combination)
        return None
    from numba import njit

    try:
        return njit(**JIT_OPTIONS)(_found_combine)
    except Exception as e:  # numba's errors have no common root
        logger.warning("the compiled combination is unavailable (%s)", e)
        return None
