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
    key = np.empty(count, np.int64)
    for i in range(count):
        key[i] = -(size[i] * _RANK_SPAN + rank[i])
    order = np.argsort(key)
    # Placed buffers sorted by offset (a new one goes after equal offsets, as in TFLM).
    start = np.empty(count, np.int64)
    end = np.empty(count, np.int64)
    alive_from = np.empty(count, np.int64)
    alive_to = np.empty(count, np.int64)
    high = 0
    for placed in range(count):
        i = order[placed]
        wanted, f, t = size[i], first[i], last[i]
        offset = 0
        for q in range(placed):
            # Placed buffers are in offset order: from the first one at or above
            # offset + wanted on, no buffer can move the offset (TFLM goes on to find
            # the next one it shares a scope with, and stops there).
            if start[q] - offset >= wanted:
                break
            if alive_from[q] <= t and f <= alive_to[q] and end[q] > offset:
                offset = end[q]
        q = placed
        while q > 0 and start[q - 1] > offset:
            start[q], end[q] = start[q - 1], end[q - 1]
            alive_from[q], alive_to[q] = alive_from[q - 1], alive_to[q - 1]
            q -= 1
        start[q], end[q], alive_from[q], alive_to[q] = offset, offset + wanted, f, t
        high = max(high, offset + wanted)
    return high


@functools.cache
def kernel() -> Callable[[np.ndarray, int], int] | None:
    """:func:`greedy_high_water` compiled (None without numba)."""
    try:  # deferred: numba takes ~0.5 s to import
        from numba import njit
    except ImportError:  # an optional speed-up: the chain planner gives the same figures
        logger.info("numba is not installed: the config memory model plans in Python")
        return None
    # cache=True: compiled once per installation (~5 s), then loaded (~1 s).
    planner = njit(cache=True, nogil=True)(greedy_high_water)
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
