"""TFLM's greedy high-water mark of a chain of pieces, planned flat in compiled code.

:func:`edgekit.estimate._config_plan.chain_high_water` plans in Python and memoises per-piece
partial plans: fast where pieces and their boundary offsets repeat (tiny-vit's few kinds of
blocks), slow where they do not (tiny-cnn: most configs bring a new piece or a new
combination of boundary offsets, and a patch-based first stage brings ~170 buffers that are
planned anew). This module places every buffer of the chain in one compiled call instead
(numba), exactly as :func:`edgekit.estimate.planner.plan_greedy` does: a few microseconds for
a whole-image CNN, tens for a patched one. Without numba (:func:`compiled` is False) the
caller keeps the chain planner.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from edgekit.estimate._config_plan import PlanPiece

logger = logging.getLogger(__name__)

# How the compiled memory model is compiled: once per installation (cache=True: ~5 s, then
# loaded in ~1 s); with numpy's error model, which leaves out the zero checks of integer
# division and modulo (a few % of a patched config's call: every divisor here is a size, a
# stride, a pointer width or an alignment, never zero). numba's cache is checked against the
# file of the function it holds only: after editing a helper that kernels of another file
# compile in (slot, the planner), delete the caches (make clean, or the *.nbi / *.nbc files
# under edgekit/estimate/__pycache__).
JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}

# Sort key: size, then request order (both descending); request indices stay below this.
_RANK_SPAN = 1 << 32
SCRATCH_CLASS = 1 << 40  # a buffer's class: its op's index, or this + n for scratch buffer n


def greedy_high_water(columns: np.ndarray, input_size: int) -> int:
    """``columns``: every piece's :attr:`PlanPiece.columns` side by side. A piece's first
    column is its header (ops, entry_last, out_size, own buffer count), then one column per
    own buffer (size, class (see SCRATCH_CLASS), first, last; scopes from 1 at the piece's
    first op)."""
    total = columns.shape[1]
    total_ops = 0
    at = 0
    while at < total:
        total_ops += columns[0, at]
        at += 1 + columns[3, at]
    count = total + 1  # own buffers, one boundary tensor per piece (its output), the input
    size = np.empty(count, np.int64)
    rank = np.empty(count, np.int64)  # request order: tensors by op, then scratch buffers
    first = np.empty(count, np.int64)
    last = np.empty(count, np.int64)
    size[0] = input_size
    rank[0] = 0
    first[0] = 0
    last[0] = columns[1, 0]
    n = 1
    base = 0  # ops before the piece
    scratch_base = 0
    at = 0
    while at < total:
        ops, own = columns[0, at], columns[3, at]
        own_scratch = 0
        for j in range(at + 1, at + 1 + own):
            klass = columns[1, j]
            size[n] = columns[0, j]
            if klass >= SCRATCH_CLASS:
                rank[n] = 1 + total_ops + scratch_base + klass - SCRATCH_CLASS
                own_scratch += 1
            else:
                rank[n] = 1 + base + klass
            first[n] = base + columns[2, j]
            last[n] = base + columns[3, j]
            n += 1
        scratch_base += own_scratch
        # The piece's output: read until the next piece's entry_last (the model's output:
        # only by its own op).
        size[n] = columns[2, at]
        rank[n] = base + ops
        first[n] = base + ops
        at += 1 + own
        last[n] = base + ops + (columns[1, at] if at < total else 0)
        n += 1
        base += ops
    return _first_fit(size, first, last, _placement_order(size, rank))


def _placement_order(size: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Indices by size, then rank, both descending (TFLM's order). Ranks are distinct. A
    radix sort of (size, rank) packed into 32 bits where they fit (a chain's ~200 buffers:
    a few microseconds less than a comparison sort), else a comparison sort."""
    count = len(size)
    most_size = most_rank = 0
    for i in range(count):
        most_size = max(most_size, size[i])
        most_rank = max(most_rank, rank[i])
    rank_bits = 0
    while (1 << rank_bits) <= most_rank:
        rank_bits += 1
    if most_size >= 1 << (32 - rank_bits):
        key = np.empty(count, np.int64)
        for i in range(count):
            key[i] = -(size[i] * _RANK_SPAN + rank[i])
        return np.argsort(key)
    # Least significant byte first, each pass stable: ascending keys, read back to front.
    order = np.arange(count)
    spare = np.empty(count, np.int64)
    key = np.empty(count, np.int64)
    for i in range(count):
        key[i] = (size[i] << rank_bits) | rank[i]
    counts = np.empty(257, np.int64)
    for shift in range(0, 32, 8):
        counts[:] = 0
        for i in range(count):
            counts[1 + ((key[order[i]] >> shift) & 255)] += 1
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(count):
            digit = (key[order[i]] >> shift) & 255
            spare[counts[digit]] = order[i]
            counts[digit] += 1
        order, spare = spare, order
    return order[::-1].copy()


_LONG_LIVED = 4  # ops from which a buffer's lifetime counts as long
_BLOCK_SHIFT = 3  # ops are grouped in blocks of 2**_BLOCK_SHIFT (see _first_fit's top)


def _first_fit(size: np.ndarray, first: np.ndarray, last: np.ndarray, order: np.ndarray) -> int:
    """The high-water mark of TFLM's placement: each buffer in ``order`` goes to the lowest
    offset clear of every placed buffer whose lifetime [first, last] overlaps its own (TFLM
    finds it walking all placed buffers in offset order; the offset does not depend on the
    order equal offsets are visited in). Here a buffer only looks at the placed buffers
    alive at each op of its lifetime, kept per op by offset (short-lived ones), and at the
    placed long-lived ones: a patched part's ~180 buffers mostly live for an op or two."""
    count = len(size)
    ops = 0
    for i in range(count):
        ops = max(ops, last[i] + 1)
    # Op s's placed short-lived buffers by offset: rows [begin[s], filled[s]) of alive,
    # each (start, end) offsets (kept inline: read far more often than inserted).
    begin = np.zeros(ops + 1, np.int64)
    for i in range(count):
        if last[i] - first[i] < _LONG_LIVED:
            for s in range(first[i], last[i] + 1):
                begin[s + 1] += 1
    for s in range(ops):
        begin[s + 1] += begin[s]
    alive = np.empty((begin[ops], 2), np.int64)
    filled = begin[:ops].copy()
    # Per block of ops, the highest end of a short-lived buffer placed in it: a buffer whose
    # offset is already there skips the block's ops (a long-lived one spans ~100 ops, and
    # most of them lie below it).
    top = np.zeros((ops >> _BLOCK_SHIFT) + 1, np.int64)
    # Placed long-lived buffers by offset: (start, end, first op, last op).
    long_lived = np.empty((count, 4), np.int64)
    longs = 0
    # Per op of the buffer's lifetime: entries looked at (valid where stamp is the buffer's).
    seen = np.empty(ops, np.int64)
    stamp = np.full(ops, -1, np.int64)
    high = 0
    for placed in range(count):
        i = order[placed]
        wanted, f, t = size[i], first[i], last[i]
        offset = 0
        seen_long = 0
        # Every buffer below offset + wanted that is alive with this one raises the offset
        # to its end; the offset only rises, so each list is walked once, in rounds until
        # none raises it.
        moved = True
        while moved:
            moved = False
            k = seen_long
            while k < longs and long_lived[k, 0] < offset + wanted:
                if long_lived[k, 1] > offset and long_lived[k, 2] <= t and f <= long_lived[k, 3]:
                    offset = long_lived[k, 1]
                    moved = True
                k += 1
            seen_long = k
            s = f
            while s <= t:
                if top[s >> _BLOCK_SHIFT] <= offset:  # nothing there can raise it
                    s = ((s >> _BLOCK_SHIFT) + 1) << _BLOCK_SHIFT
                    continue
                if stamp[s] == placed:
                    k = seen[s]
                else:
                    stamp[s] = placed
                    k = begin[s]
                while k < filled[s] and alive[k, 0] < offset + wanted:
                    if alive[k, 1] > offset:
                        offset = alive[k, 1]
                        moved = True
                    k += 1
                seen[s] = k
                s += 1
        high = max(high, offset + wanted)
        if t - f < _LONG_LIVED:
            for s in range(f, t + 1):
                _insert(alive, begin[s], filled[s], offset, offset + wanted, f, t)
                filled[s] += 1
                top[s >> _BLOCK_SHIFT] = max(top[s >> _BLOCK_SHIFT], offset + wanted)
        else:
            _insert(long_lived, 0, longs, offset, offset + wanted, f, t)
            longs += 1
    return high


def _insert(
    rows: np.ndarray, low: int, end: int, start: int, stop: int, first: int, last: int
) -> None:
    """Put a placed buffer (offsets ``start``-``stop``, ops ``first``-``last``; as many of
    these as ``rows`` has columns) into ``rows[low:end]``, ordered by start offset."""
    k = end
    while k > low and rows[k - 1, 0] > start:
        rows[k] = rows[k - 1]
        k -= 1
    rows[k, 0] = start
    rows[k, 1] = stop
    if rows.shape[1] > 2:
        rows[k, 2] = first
        rows[k, 3] = last


@functools.cache
def kernel() -> Callable[[np.ndarray, int], int] | None:
    """:func:`greedy_high_water` compiled (None without numba)."""
    try:  # deferred: numba takes ~0.5 s to import
        from numba import njit
    except ImportError:  # an optional speed-up: the chain planner gives the same figures
        logger.info("numba is not installed: the config memory model plans in Python")
        return None
    # greedy_high_water finds these by their global names: compiled code must find them
    # compiled.
    global _first_fit, _placement_order, _insert
    _insert = njit(**JIT_OPTIONS, inline="always")(_insert)
    _first_fit = njit(**JIT_OPTIONS)(_first_fit)
    _placement_order = njit(**JIT_OPTIONS)(_placement_order)
    planner = njit(**JIT_OPTIONS)(greedy_high_water)
    try:
        planner(piece_columns(1, 1, 16, ()), 16)
    except Exception as e:  # e.g. no writable cache folder: numba's errors have no common root
        logger.warning("the compiled memory planner is unavailable (%s); planning in Python", e)
        return None
    return planner


def compiled() -> bool:
    """Whether :func:`flat_high_water` runs compiled (numba is installed)."""
    return kernel() is not None


def piece_columns(
    ops: int, entry_last: int, out_size: int, buffers: Sequence[tuple[int, int, int, int]]
) -> np.ndarray:
    """A piece's columns (see :func:`greedy_high_water`); ``buffers``: (size, class, first,
    last)."""
    columns = np.empty((4, 1 + len(buffers)), np.int64)
    columns[:, 0] = (ops, entry_last, out_size, len(buffers))
    if buffers:
        columns[:, 1:] = np.array(buffers, np.int64).T
    return columns


class FlatPiece(NamedTuple):
    """A piece known only by its columns (see :func:`piece_columns`): one the chain planner
    never sees."""

    columns: np.ndarray


def flat_high_water(pieces: Sequence[PlanPiece | FlatPiece], input_size: int) -> int:
    """``plan_greedy(...).high_water`` of the chain, like ``chain_high_water`` (in Python when
    numba is missing: correct but slow)."""
    plan = kernel() or greedy_high_water
    return int(plan(np.concatenate([p.columns for p in pieces], axis=1), input_size))
