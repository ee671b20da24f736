"""A patch-based first stage's buffers, tail and shared constants, assembled in compiled code.

A patched part runs the same few layers on every patch of a grid; what one layer on one patch
adds to the graph (its ops, their lifetimes, tail and flash) is the layer's *template* for
its *variant* (no zeros, zeros folded into a SAME conv, an explicit PAD; a residual's skip
used whole or cropped) plus its *geometry* (the patch's region sizes, which size its buffers,
and the values of its slice bounds and paddings, which are constants merged by value). The
templates are few and kept in :class:`TemplateStore`; :func:`_assemble` walks the grid, exactly
as ``_config_fast`` did patch by patch in Python, in one compiled call (numba). Without numba
the same function runs as Python (correct, slow: the caller then keeps its Python path).

Integer constants are numbered by value (see ``CODE_SHIFT``) so that the caller can count
each once per model together with the rest of the graph's constants.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from edgekit.estimate._flat_plan import JIT_OPTIONS, SCRATCH_CLASS

logger = logging.getLogger(__name__)

# Template columns (TemplateStore.info)
OPS, ENTRIES, ENTRY_LAST, SKIP_LAST, TENSORS, OP_START, SCRATCH_START, SCRATCH_COUNT = range(8)
RUN_OP_DATA, RUN_FIRST_OP_DATA, RUN_PEAK, RUN_PERSIST, RUN_SCRATCH, LAYOUTS = range(8, 14)
INFO_COLUMNS = 14
# A template's flash (TemplateStore.flash): counted each time it is added. Its layer's own
# constants (TemplateStore.layer_flash: weights, biases, their scales; the same for every
# variant of the layer) are counted once per graph, with their tensors (LAYER_TENSORS).
LAYER_TENSORS = 0
# Op columns (TemplateStore.ops): dims (0: the unit's output region, 1: its padded input),
# channels, last reader (scope relative to the unit; 0: read after it)
OUT_DIMS, PADDED_DIMS = 0, 1
# Variants of a layer on one patch: pad kind * 2 + cropped skip.
NO_ZEROS, FOLDED_ZEROS, PAD_OP = 0, 1, 2
VARIANTS = 6
# An int32 constant a patch uses, numbered by value: kind << CODE_SHIFT, then its values a
# byte each (all below 256): BEGIN_END (0, y, x, 0) by y, x; STRIDES (1, 1, 1, 1);
# PADDINGS (0, 0, top, bottom, left, right, 0, 0) by top, bottom, left, right.
BEGIN_END, STRIDES, PADDINGS = 0, 1, 2
CODE_SHIFT = 48


# A (layer, variant)'s template id in TemplateStore.table: none made yet, or one the
# compiled assembly cannot add up (-1 is no template: a grid without image slices).
UNKNOWN, UNUSABLE = -2, -3
# _assemble's status: assembled, or the first of these met.
ASSEMBLED = 0


class TemplateStore:
    """Templates of one runtime, in growable arrays the compiled assembly reads."""

    def __init__(self, pointer: int, flash_columns: int) -> None:
        self.count = 0
        self.info = np.zeros((64, INFO_COLUMNS), np.int64)
        self.drops = np.zeros((64, pointer), np.int64)
        self.flash = np.zeros((64, flash_columns), np.int64)
        self.layer_flash = np.zeros((64, 1 + flash_columns), np.int64)
        self.ops = np.zeros((256, 3), np.int64)
        self.op_count = 0
        self.scratch = np.zeros((16, 2), np.int64)
        self.scratch_count = 0
        # Constants other pieces may hold too, per template: their keys and flash (bytes,
        # int64 vectors, fillers) at public_start[t]:public_start[t + 1].
        self.public_start = np.zeros(65, np.int64)
        self.public_keys = np.zeros(64, np.int64)
        self.public_flash = np.zeros((64, 3), np.int64)
        self.first_opcodes: list[str] = []
        # template id by (layer number, variant); UNKNOWN where none was made yet
        self.table = np.full((64, VARIANTS), UNKNOWN, np.int64)
        self._arrays: tuple[np.ndarray, ...] | None = None

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The store as :func:`_assemble` reads it, from ``table`` to ``public_flash``."""
        if self._arrays is None:  # (add and set_template may replace the arrays)
            self._arrays = (
                self.table, self.info, self.drops, self.ops, self.scratch, self.flash,
                self.layer_flash, self.public_start, self.public_keys, self.public_flash,
            )  # fmt: skip
        return self._arrays

    def add(
        self,
        entry_lasts: Sequence[int],
        tensors: int,
        ops: Sequence[tuple[int, int, int]],
        scratch: Sequence[tuple[int, int]],
        run: tuple[Sequence[int], int, int, int, int, int, int],
        layouts: int,
        flash: Sequence[int],
        layer_flash: Sequence[int],
        public: Sequence[tuple[int, Sequence[int]]],
        first_opcode: str,
    ) -> int:
        """A new template's id. ``ops``: (dims, channels, last) per op in order; ``scratch``:
        (aligned size, scope); ``run``: its tail's RunTerms; ``layouts``: a bit set below
        2**62; ``flash``, ``layer_flash``: flash figures as int columns (``layer_flash``
        after its tensor count); ``public``: (key, flash columns) of its constants other
        pieces may hold too."""
        index = self.count
        self._arrays = None
        self.info = grown(self.info, index + 1)
        self.drops = grown(self.drops, index + 1)
        self.flash = grown(self.flash, index + 1)
        self.layer_flash = grown(self.layer_flash, index + 1)
        self.ops = grown(self.ops, self.op_count + len(ops))
        self.scratch = grown(self.scratch, self.scratch_count + len(scratch))
        drops, run_ops, op_data, first_op_data, peak, persist, run_scratch = run
        assert run_ops == len(ops) and run_scratch == len(scratch)
        self.info[index] = (
            len(ops), len(entry_lasts), entry_lasts[0], entry_lasts[-1], tensors,
            self.op_count, self.scratch_count, len(scratch),
            op_data, first_op_data, peak, persist, run_scratch, layouts,
        )  # fmt: skip
        self.drops[index] = drops
        self.flash[index] = flash
        self.layer_flash[index] = layer_flash
        if ops:
            self.ops[self.op_count : self.op_count + len(ops)] = ops
        if scratch:
            self.scratch[self.scratch_count : self.scratch_count + len(scratch)] = scratch
        self.op_count += len(ops)
        self.scratch_count += len(scratch)
        self.public_start = grown(self.public_start, index + 2)
        at = self.public_start[index]
        self.public_keys = grown(self.public_keys, at + len(public))
        self.public_flash = grown(self.public_flash, at + len(public))
        for key, key_flash in public:
            self.public_keys[at] = key
            self.public_flash[at] = key_flash
            at += 1
        self.public_start[index + 1] = at
        self.first_opcodes.append(first_opcode)
        self.count += 1
        return index

    def set_template(self, layer: int, variant: int, template: int) -> None:
        """Record the template (or UNUSABLE) of layer number ``layer`` in ``variant``."""
        self._arrays = None
        if layer >= len(self.table):
            bigger = np.full((max(layer + 1, 2 * len(self.table)), VARIANTS), UNKNOWN, np.int64)
            bigger[: len(self.table)] = self.table
            self.table = bigger
        self.table[layer, variant] = template


def grown(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with room for ``rows`` rows: itself, or a copy at least twice as long."""
    if rows <= len(array):
        return array
    bigger = np.zeros((max(rows, 2 * len(array)), *array.shape[1:]), array.dtype)
    bigger[: len(array)] = array
    return bigger


EMPTY = -(1 << 62)  # no key is this
# The golden ratio's 64 bits (as an int64): a key times this, folded to 32 and then 16 bits,
# spreads every bit of the key (up to bit ~60) over the slot's bits. (The low bits of a product
# depend only on the low bits of the key: a block's key has its map size there, a unit's its
# paddings, so a plain product sent most keys of a table to one run of slots.)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def slot(keys: np.ndarray, key: int) -> int:
    """Where ``key`` is in an open-addressing table (a power of two long, at most 2**32, its
    free slots EMPTY), or the free slot it would take. The same slot in Python and compiled:
    the product's bits below 64 do not depend on whether it wraps there."""
    mask = len(keys) - 1
    product = key * _GOLDEN
    folded = (product ^ (product >> 32)) & 0xFFFFFFFF
    at = (folded ^ (folded >> 16)) & mask
    while keys[at] != key and keys[at] != EMPTY:
        at = (at + 1) & mask
    return at


def variant(row_flags: int, column_flags: int, has_skip: bool) -> int:
    """The variant a layer runs in on a patch whose row and column have these flags (bit 0
    zeros, bit 1 zeros equal to SAME padding, bit 2 skip cropped)."""
    if (row_flags | column_flags) & 1 == 0:
        kind = NO_ZEROS
    elif row_flags & column_flags & 2:
        kind = FOLDED_ZEROS
    else:
        kind = PAD_OP
    return 2 * kind + (1 if has_skip and (row_flags | column_flags) & 4 else 0)


# What the compiled functions call: compiled with them (see _compile_helpers).
_slot = slot
_variant = variant


@functools.cache
def _compile_helpers() -> None:
    """Compile the helpers :func:`_assemble` and :func:`_grid_geometry` find by their global
    names (compiled code must find them compiled); once: ``_codes`` is replaced by its
    compiled self."""
    from numba import njit

    global _slot, _variant, _codes
    _slot = njit(**JIT_OPTIONS, inline="always")(slot)
    _variant = njit(**JIT_OPTIONS, inline="always")(variant)
    _codes = njit(**JIT_OPTIONS)(_codes)


def _assemble(
    axis: np.ndarray,
    flags: np.ndarray,
    skip_of: np.ndarray,
    usage: np.ndarray,
    known_count: int,
    known_flash: np.ndarray,
    known_keys: np.ndarray,
    known_key_flash: np.ndarray,
    layer_numbers: np.ndarray,
    slice_id: int,
    image_size: int,
    out_channels: int,
    concat_ops: int,
    concat_run: np.ndarray,
    concat_flash: np.ndarray,
    concat_layouts: int,
    alignment: int,
    request: int,
    table: np.ndarray,
    info: np.ndarray,
    drops: np.ndarray,
    ops: np.ndarray,
    scratch: np.ndarray,
    template_flash: np.ndarray,
    layer_flash: np.ndarray,
    public_start: np.ndarray,
    public_keys: np.ndarray,
    public_flash: np.ndarray,
) -> tuple[
    int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """The patched part of a grid (``axis``: per axis position and layer, input range, zeros
    before and after, output range; ``flags``: per axis position and layer, bit 0 zeros,
    bit 1 zeros equal to SAME padding, bit 2 skip cropped; ``usage``: (layer, variant, ...)
    of each variant the grid uses, whose template ``table`` gives by the layer's number
    in ``layer_numbers``; ``image_size``: its height and width; ``concat_*``: the
    CONCATENATIONs' run terms (ops, OpData, first OpData, peak, persistent bytes, scratch
    buffers, then the options drop per residue), flash, ops and layouts; ``known_*``: the
    int32 constants its geometry merges by value (tensors, flash, then the keys and flash of
    those other pieces may hold too; see :func:`_grid_geometry`).

    Returns (status, first template, planner columns, info as _combine reads a first piece,
    options drop per start residue, flash columns, keys and their flash). Status UNKNOWN: a
    variant the grid uses has no template yet; UNUSABLE: one has a template this cannot add
    up; else ASSEMBLED."""
    grid, layers = axis.shape[0], axis.shape[1]
    pointer = drops.shape[1]
    variant_ids = np.full((layers, VARIANTS), UNUSABLE, np.int64)
    for u in range(usage.shape[0]):
        layer, variant = usage[u, 0], usage[u, 1]
        number = layer_numbers[layer]
        t = table[number, variant] if number < table.shape[0] else UNKNOWN
        if t < 0:
            nothing = np.empty(0, np.int64)
            return (
                t, -1, np.empty((4, 0), np.int64), nothing, nothing, nothing, nothing,
                np.empty((0, 3), np.int64),
            )  # fmt: skip
        variant_ids[layer, variant] = t
    # At most every unit on every patch, each with its template's ops (the largest of the
    # layer's variants), then the CONCATENATIONs.
    unit_ops = info[slice_id, OPS] if slice_id >= 0 else 0
    for layer in range(layers):
        most = 0
        for t in variant_ids[layer]:
            if t >= 0:
                most = max(most, info[t, OPS])
        unit_ops += most
    capacity = grid * grid * unit_ops + grid + 1
    size = np.empty(capacity, np.int64)
    last = np.zeros(capacity, np.int64)
    scratch_size = np.empty(capacity, np.int64)
    scratch_scope = np.empty(capacity, np.int64)
    flash = np.zeros(template_flash.shape[1], np.int64)
    layer_own = np.zeros(layer_flash.shape[1], np.int64)  # the layers' own constants
    layer_met = np.zeros(layers, np.bool_)
    layouts = 0
    residue = np.arange(pointer)
    dropped = np.zeros(pointer, np.int64)
    count = scratch_count = 0
    base = entry_last = tensors = 0
    added = np.empty(grid * grid * (layers + 1), np.int64)  # templates of the units added
    added_base = np.empty(grid * grid * (layers + 1), np.int64)  # ops before each
    added_count = 0
    op_data = first_op_data = peak = persisted = run_scratch = 0
    # (input buffer, layer, zeros) or region -> output buffer: an open-addressing table
    slots = 1
    while slots < 2 * grid * grid * (layers + 1):
        slots *= 2
    made_key = np.full(slots, EMPTY, np.int64)
    made_value = np.empty(slots, np.int64)
    inputs = np.empty(layers + 1, np.int64)
    outputs = np.empty(grid * grid, np.int64)
    for p in range(grid * grid):
        i, j = p // grid, p % grid
        y0, y1, x0, x1 = axis[i, 0, 0], axis[i, 0, 1], axis[j, 0, 0], axis[j, 0, 1]
        if y0 == 0 and x0 == 0 and y1 == image_size and x1 == image_size:
            x = -1
        else:
            layouts |= info[slice_id, LAYOUTS]
            key = -((y0 << 24) | (y1 << 16) | (x0 << 8) | x1) - 1
            slot = _slot(made_key, key)
            if made_key[slot] == key:
                x = made_value[slot]
            else:
                t = slice_id
                entry_last = max(entry_last, base + info[t, ENTRY_LAST])
                o = info[t, OP_START]
                for k in range(info[t, OPS]):
                    elements = (y1 - y0) * (x1 - x0) * ops[o + k, 1]
                    size[count] = -(-elements // alignment) * alignment
                    rel = ops[o + k, 2]
                    last[count] = base + rel if rel else 0
                    count += 1
                x = count - 1
                made_key[slot] = key
                made_value[slot] = x
                added[added_count] = t
                added_base[added_count] = base
                added_count += 1
                base += info[t, OPS]
        inputs[0] = x
        for layer in range(layers):
            ry0, ry1, top, bottom, oy0, oy1 = axis[i, layer]
            rx0, rx1, left, right, ox0, ox1 = axis[j, layer]
            fi, fj = flags[i, layer], flags[j, layer]
            source = skip_of[layer]
            t = variant_ids[layer, _variant(fi, fj, source >= 0)]
            layouts |= info[t, LAYOUTS]
            if not layer_met[layer]:
                layer_met[layer] = True
                layer_own += layer_flash[t]
            key = ((x + 1) << 32) | (layer << 24) | (top << 18) | (bottom << 12) | (left << 6)
            key |= right
            slot = _slot(made_key, key)
            if made_key[slot] == key:
                x = made_value[slot]
                inputs[layer + 1] = x
                continue
            # the unit's entries: its input (and its residual's skip tensor)
            rel = info[t, ENTRY_LAST]
            if x < 0:
                entry_last = max(entry_last, base + rel)
            else:
                last[x] = max(last[x], base + rel)
            if info[t, ENTRIES] == 2:
                skip = inputs[source]
                rel = info[t, SKIP_LAST]
                if skip < 0:
                    entry_last = max(entry_last, base + rel)
                else:
                    last[skip] = max(last[skip], base + rel)
            o = info[t, OP_START]
            for k in range(info[t, OPS]):
                if ops[o + k, 0] == PADDED_DIMS:
                    elements = (ry1 - ry0 + top + bottom) * (rx1 - rx0 + left + right)
                else:
                    elements = (oy1 - oy0) * (ox1 - ox0)
                elements *= ops[o + k, 1]
                size[count] = -(-elements // alignment) * alignment
                rel = ops[o + k, 2]
                last[count] = base + rel if rel else 0
                count += 1
            added[added_count] = t
            added_base[added_count] = base
            added_count += 1
            base += info[t, OPS]
            x = count - 1
            made_key[slot] = key
            made_value[slot] = x
            inputs[layer + 1] = x
        outputs[p] = x
    # The CONCATENATIONs: each row of patches along the width, then the rows.
    width = 0
    for j in range(grid):
        width += axis[j, layers - 1, 5] - axis[j, layers - 1, 4]
    height = 0
    rows = np.empty(grid, np.int64)
    for i in range(grid):
        for p in range(i * grid, (i + 1) * grid):
            last[outputs[p]] = base + i + 1
        rows_height = axis[i, layers - 1, 5] - axis[i, layers - 1, 4]
        height += rows_height
        elements = rows_height * width * out_channels
        size[count] = -(-elements // alignment) * alignment
        last[count] = 0
        rows[i] = count
        count += 1
    for i in range(grid):
        last[rows[i]] = base + grid + 1
    size[count] = -(-(height * width * out_channels) // alignment) * alignment
    last[count] = 0
    count += 1
    # Every unit added, in order: its scratch buffers, tail terms (folded as
    # _config_arena.compose_runs does), tensors and flash.
    for a in range(added_count):
        t, at = added[a], added_base[a]
        for s in range(info[t, SCRATCH_COUNT]):
            scratch_size[scratch_count] = scratch[info[t, SCRATCH_START] + s, 0]
            scratch_scope[scratch_count] = at + scratch[info[t, SCRATCH_START] + s, 1]
            scratch_count += 1
        for r in range(pointer):
            d = drops[t, residue[r]]
            dropped[r] += d
            residue[r] = (residue[r] - d) % pointer
        if first_op_data == 0:
            first_op_data = info[t, RUN_FIRST_OP_DATA]
        peak = max(peak, persisted + request * run_scratch + info[t, RUN_PEAK])
        op_data += info[t, RUN_OP_DATA]
        persisted += info[t, RUN_PERSIST]
        run_scratch += info[t, RUN_SCRATCH]
        tensors += info[t, TENSORS]
        flash += template_flash[t]
    # The CONCATENATIONs' run after the patches'.
    for r in range(pointer):
        d = concat_run[6 + residue[r]]
        dropped[r] += d
        residue[r] = (residue[r] - d) % pointer
    if first_op_data == 0:
        first_op_data = concat_run[2]
    peak = max(peak, persisted + request * run_scratch + concat_run[3])
    op_data += concat_run[1]
    persisted += concat_run[4]
    run_scratch += concat_run[5]
    ops_total = count
    own = count - 1 + scratch_count
    columns = np.empty((4, 1 + own), np.int64)
    columns[0, 0] = ops_total
    columns[1, 0] = entry_last
    columns[2, 0] = size[count - 1]
    columns[3, 0] = own
    for b in range(count - 1):
        columns[0, 1 + b] = size[b]
        columns[1, 1 + b] = b
        columns[2, 1 + b] = b + 1
        columns[3, 1 + b] = last[b]
    for s in range(scratch_count):
        columns[0, count + s] = scratch_size[s]
        columns[1, count + s] = SCRATCH_CLASS + s
        columns[2, count + s] = scratch_scope[s]
        columns[3, count + s] = scratch_scope[s]
    part = np.empty(9, np.int64)  # see _combine's INFO_COLUMNS
    part[0] = tensors + layer_own[LAYER_TENSORS] + known_count + concat_ops
    part[1] = count + scratch_count
    part[2] = layouts | concat_layouts
    part[3] = base + concat_run[0]
    part[4] = op_data
    part[5] = first_op_data
    part[6] = peak
    part[7] = persisted
    part[8] = run_scratch
    flash += layer_own[1:] + known_flash + concat_flash
    # The constants other pieces may hold too: the geometry's, then each template's.
    used = np.zeros(info.shape[0], np.bool_)
    distinct = np.empty(added_count, np.int64)  # the templates added, each once
    distinct_count = 0
    key_count = len(known_keys)
    for a in range(added_count):
        t = added[a]
        if not used[t]:
            used[t] = True
            distinct[distinct_count] = t
            distinct_count += 1
            key_count += public_start[t + 1] - public_start[t]
    keys = np.empty(key_count, np.int64)
    key_flash = np.empty((key_count, 3), np.int64)
    keys[: len(known_keys)] = known_keys
    key_flash[: len(known_keys)] = known_key_flash
    k = len(known_keys)
    for d in range(distinct_count):
        t = distinct[d]
        for e in range(public_start[t], public_start[t + 1]):
            keys[k] = public_keys[e]
            key_flash[k] = public_flash[e]
            k += 1
    first = added[0] if added_count else -1
    return (
        ASSEMBLED, first, columns, part, dropped, flash, keys, key_flash,
    )  # fmt: skip


def _grid_geometry(
    resolution: int, grid: int, kernels: np.ndarray, strides: np.ndarray, sources: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The grid of a patched part whose layers have these kernels, strides and residual
    sources (-1: none), as ``_config_fast._patch_geometry`` describes it: (the patched
    output's size, axis, flags, usage, codes). ``axis``: per axis position and layer, input range,
    zeros before and after, output range, as ``edgekit.spaces.tiny_cnn.axis_plan`` gives
    them (rows and columns alike); ``flags``: bit 0 zeros, bit 1 zeros equal to SAME
    padding, bit 2 skip cropped; ``usage``: (layer, variant, i, j) of each variant the grid
    uses, at its first patch in row-major order; ``codes``: the int32 constants the patches
    use (slice bounds and strides, paddings of PAD ops, crops of residuals; by value, see
    CODE_SHIFT; repeated as used). Empty arrays when the output is smaller than the grid."""
    layers = len(kernels)
    in_size = np.empty(layers, np.int64)
    before = np.empty(layers, np.int64)
    size = resolution
    for layer in range(layers):
        out = -(-size // strides[layer])
        total = max((out - 1) * strides[layer] + kernels[layer] - size, 0)
        in_size[layer], before[layer] = size, total // 2
        size = out
    if size < grid:
        empty = np.empty((0, 0), np.int64)
        return size, np.empty((0, 0, 6), np.int64), empty, empty, np.empty(0, np.int64)
    axis = np.empty((grid, layers, 6), np.int64)
    for i in range(grid):
        o0, o1 = i * size // grid, (i + 1) * size // grid
        for layer in range(layers - 1, -1, -1):
            start = o0 * strides[layer] - before[layer]
            end = (o1 - 1) * strides[layer] - before[layer] + kernels[layer]
            r0, r1 = max(start, 0), min(end, in_size[layer])
            axis[i, layer, 0], axis[i, layer, 1] = r0, r1
            axis[i, layer, 2], axis[i, layer, 3] = max(-start, 0), max(end - in_size[layer], 0)
            axis[i, layer, 4], axis[i, layer, 5] = o0, o1
            o0, o1 = r0, r1
    flags = np.zeros((grid, layers), np.int64)
    for i in range(grid):
        for layer in range(layers):
            zeros_before, zeros_after = axis[i, layer, 2], axis[i, layer, 3]
            if zeros_before or zeros_after:
                flags[i, layer] |= 1
            span = axis[i, layer, 1] - axis[i, layer, 0]
            out = -(-span // strides[layer])
            total = max((out - 1) * strides[layer] + kernels[layer] - span, 0)
            if total // 2 == zeros_before and total - total // 2 == zeros_after:
                flags[i, layer] |= 2
            source = sources[layer]
            if source >= 0 and (
                axis[i, layer, 4] != axis[i, source, 0] or axis[i, layer, 5] != axis[i, source, 1]
            ):
                flags[i, layer] |= 4
    # Patch (i, j) runs a layer in the variant its row's and column's flags make; a
    # variant's first use is at the first row and column with flags that make it.
    usage = np.empty((layers * VARIANTS, 4), np.int64)
    used = 0
    first_at = np.empty(8, np.int64)  # flags -> first position with them
    best = np.empty((VARIANTS, 2), np.int64)
    for layer in range(layers):
        first_at[:] = -1
        for position in range(grid):
            if first_at[flags[position, layer]] < 0:
                first_at[flags[position, layer]] = position
        best[:] = grid
        for fi in range(8):
            i = first_at[fi]
            if i < 0:
                continue
            for fj in range(8):
                j = first_at[fj]
                if j < 0:
                    continue
                v = _variant(fi, fj, sources[layer] >= 0)
                if i < best[v, 0] or (i == best[v, 0] and j < best[v, 1]):
                    best[v, 0], best[v, 1] = i, j
        for variant in range(VARIANTS):
            if best[variant, 0] < grid:
                usage[used, 0], usage[used, 1] = layer, variant
                usage[used, 2], usage[used, 3] = best[variant, 0], best[variant, 1]
                used += 1
    return size, axis, flags, usage[:used].copy(), _codes(resolution, axis, flags, sources)


def _codes(
    image_size: int, axis: np.ndarray, flags: np.ndarray, sources: np.ndarray
) -> np.ndarray:
    """The int32 constants (by code) each patch of the grid uses: see :func:`_grid_geometry`."""
    grid, layers = axis.shape[0], axis.shape[1]
    codes = np.empty(grid * grid * (3 + 4 * layers), np.int64)
    count = 0
    for p in range(grid * grid):
        i, j = p // grid, p % grid
        y0, y1, x0, x1 = axis[i, 0, 0], axis[i, 0, 1], axis[j, 0, 0], axis[j, 0, 1]
        if not (y0 == 0 and x0 == 0 and y1 == image_size and x1 == image_size):
            codes[count] = (BEGIN_END << CODE_SHIFT) | y0 | (x0 << 8)
            codes[count + 1] = (BEGIN_END << CODE_SHIFT) | y1 | (x1 << 8)
            codes[count + 2] = STRIDES << CODE_SHIFT
            count += 3
        for layer in range(layers):
            source = sources[layer]
            v = _variant(flags[i, layer], flags[j, layer], source >= 0)
            if v // 2 == PAD_OP:
                top, bottom = axis[i, layer, 2], axis[i, layer, 3]
                left, right = axis[j, layer, 2], axis[j, layer, 3]
                codes[count] = (
                    (PADDINGS << CODE_SHIFT) | top | (bottom << 8) | (left << 16) | (right << 24)
                )
                count += 1
            if v % 2:  # the residual's skip cropped to the output
                oy0, oy1 = axis[i, layer, 4], axis[i, layer, 5]
                ox0, ox1 = axis[j, layer, 4], axis[j, layer, 5]
                sy0, sx0 = axis[i, source, 0], axis[j, source, 0]
                codes[count] = (BEGIN_END << CODE_SHIFT) | (oy0 - sy0) | ((ox0 - sx0) << 8)
                codes[count + 1] = (BEGIN_END << CODE_SHIFT) | (oy1 - sy0) | ((ox1 - sx0) << 8)
                codes[count + 2] = STRIDES << CODE_SHIFT
                count += 3
    return codes[:count].copy()


@functools.cache
def geometry() -> Callable:
    """:func:`_grid_geometry`, compiled when numba is installed."""
    try:
        from numba import njit
    except ImportError:
        return _grid_geometry
    _compile_helpers()
    return njit(**JIT_OPTIONS)(_grid_geometry)


@functools.cache
def kernel() -> Callable | None:
    """:func:`_assemble` compiled (None without numba)."""
    try:  # deferred: numba takes ~0.5 s to import
        from numba import njit
    except ImportError:
        return None
    try:
        _compile_helpers()
        return njit(**JIT_OPTIONS)(_assemble)
    except Exception as e:  # numba's errors have no common root
        logger.warning("the compiled patch assembly is unavailable (%s)", e)
        return None
