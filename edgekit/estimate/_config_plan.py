"""TFLM's greedy memory plan of a chain of pieces, from memoised per-piece plans.

The greedy planner places buffers largest first (equal sizes: later request first), each at the
lowest offset free in every scope it lives in. In a chain of pieces, a piece's own buffers
(op outputs but its last, and its scratch buffers) only share scopes with each other and with
the two *boundary* tensors: the one it reads (``Z_in``, the previous piece's output) and the one
it writes last (``Z_out``). So, given where its boundary tensors sit, a piece's plan is a
function of the piece alone and can be memoised; and each boundary tensor only depends on the
buffers of its two pieces that are placed before it. Boundary tensors are therefore placed in
planner order, each against the already placed buffers of its two pieces (partial plans, also
memoised), and then every piece is planned with both boundaries known. The result is exactly
``plan_greedy``'s high-water mark.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.estimate._flat_plan import SCRATCH_CLASS, piece_columns

_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class PlanPiece:
    """A piece's planned buffers; scopes are 1 (its first op) .. ``ops``."""

    ops: int
    entry_last: int  # last scope reading Z_in
    out_size: int  # Z_out, its last op's output
    # (size, class, first, last) of its own buffers in planner order: largest first, equal
    # sizes in reverse request order (class: op index, or SCRATCH_CLASS + n for scratch).
    buffers: tuple[tuple[int, int, int, int], ...]
    own_bytes: int  # all its buffers together: the most it can stack above its boundaries
    transient: bool = False  # rarely seen again: its plans are not memoised
    ident: int = field(default_factory=lambda: next(_ids))

    @functools.cached_property
    def conflicts(self) -> tuple[tuple[int, ...], ...]:
        """For each buffer, the earlier ones (indices into ``buffers``) sharing a scope with
        it: all a placement looks at besides the boundary tensors."""
        buffers = self.buffers
        alive: list[list[int]] = [[] for _ in range(self.ops + 1)]
        conflicts = []
        for i, (_, _, first, last) in enumerate(buffers):
            scopes = alive[first : last + 1]
            if last - first > 8:  # long-lived (a patch's output): test every earlier buffer
                conflicts.append(tuple(
                    j for j, (_, _, other_first, other_last) in enumerate(buffers[:i])
                    if other_first <= last and first <= other_last
                ))  # fmt: skip
            else:
                conflicts.append(tuple(dict.fromkeys(j for scope in scopes for j in scope)))
            for scope in scopes:
                scope.append(i)
        return tuple(conflicts)

    @functools.cached_property
    def columns(self) -> np.ndarray:
        """The piece for the compiled flat planner (see ``_flat_plan.piece_columns``)."""
        return piece_columns(self.ops, self.entry_last, self.out_size, self.buffers)


def plan_piece(
    ops: int,
    entry_last: int,
    sizes: Sequence[int],
    lasts: Sequence[int],
    scratch: Sequence[int],
    scratch_scopes: Sequence[int],
    transient: bool = False,
) -> PlanPiece:
    """``sizes``/``lasts``: every op output (the last one is Z_out); all sizes aligned."""
    buffers = [(sizes[i], i, i + 1, lasts[i]) for i in range(ops - 1)]
    buffers += [
        (size, SCRATCH_CLASS + n, scope, scope)
        for n, (size, scope) in enumerate(zip(scratch, scratch_scopes, strict=True))
    ]
    buffers.sort(key=lambda b: (b[0], b[1]), reverse=True)
    own_bytes = sum(b[0] for b in buffers)
    return PlanPiece(ops, entry_last, sizes[-1], tuple(buffers), own_bytes, transient)


def _fit(placed: list[tuple[int, int]], size: int) -> int:
    offset = 0
    for start, end in sorted(placed):
        if start - offset >= size:
            break
        if end > offset:
            offset = end
    return offset


def _local(
    piece: PlanPiece,
    in_size: int,
    in_offset: int | None,
    out_offset: int | None,
    limit: tuple[int, int] | None,
) -> tuple[int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """:func:`_plan_local`, memoised unless ``piece`` is transient (which would only fill the
    cache with plans of pieces never seen again)."""
    if piece.transient:
        return _plan_local(piece, in_size, in_offset, out_offset, limit)
    key = (piece.ident, in_size, in_offset, out_offset, limit)
    return _memoised(_LOCAL_PLANS, key, _plan_local, piece, in_size, in_offset, out_offset, limit)


# Memoised plans, keyed by plain numbers (a piece by its ident): unlike an lru_cache's
# entries, such keys and values are not tracked by the garbage collector, whose full
# collections would otherwise scan every entry again and again (in a search loop that
# costs more than planning).
_LOCAL_PLANS: dict[tuple, tuple] = {}
_OFFSETS: dict[tuple, int] = {}
_MAX_PLANS = 262144


def _memoised(
    table: dict[tuple, Any], key: tuple, function: Callable[..., Any], *args: Any
) -> Any:
    value = table.get(key)
    if value is None:
        if len(table) >= _MAX_PLANS:
            table.clear()
        value = table[key] = function(*args)
    return value


def _plan_local(
    piece: PlanPiece,
    in_size: int,
    in_offset: int | None,
    out_offset: int | None,
    limit: tuple[int, int] | None,
) -> tuple[int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """Plan ``piece``'s buffers that come before ``limit`` (a (size, class) in planner order;
    None: all) with its boundary tensors at the given offsets (None: not placed yet).

    Returns (highest end, placed intervals alive at the last scope (they meet Z_out),
    placed intervals alive up to ``entry_last`` (they meet Z_in)).
    """
    ops, entry_last = piece.ops, piece.entry_last
    # The boundary tensors, in planner order among the piece's buffers (Z_in is requested
    # before every buffer of the piece, Z_out after its op outputs and before its scratch).
    boundaries = []
    if in_offset is not None:
        boundaries.append(((in_size, -1), in_offset, in_size, 0, entry_last))
    if out_offset is not None:
        boundaries.append(((piece.out_size, ops - 1), out_offset, piece.out_size, ops, ops))
    boundaries.sort(reverse=True)
    edges: list[tuple[int, int, int, int]] = []  # placed boundaries: (first, last, start, end)
    spans: list[tuple[int, int]] = []  # placed buffers
    high = 0
    for size, klass, first, last in piece.buffers:
        if limit is not None and (size, klass) < limit:
            break
        while boundaries and boundaries[0][0] > (size, klass):
            _, offset, b_size, b_first, b_last = boundaries.pop(0)
            edges.append((b_first, b_last, offset, offset + b_size))
        placed = [spans[j] for j in piece.conflicts[len(spans)]]
        for b_first, b_last, start, end in edges:
            if b_first <= last and first <= b_last:
                placed.append((start, end))
        offset = _fit(placed, size) if placed else 0
        spans.append((offset, offset + size))
        if offset + size > high:
            high = offset + size
    buffers = piece.buffers
    out_side = [span for span, b in zip(spans, buffers, strict=False) if b[3] >= ops]
    out_side += [(start, end) for first, last, start, end in edges if last >= ops]
    in_side = [span for span, b in zip(spans, buffers, strict=False) if b[2] <= entry_last]
    in_side += [(start, end) for first, _, start, end in edges if first <= entry_last]
    return high, tuple(out_side), tuple(in_side)


def clear_plan_cache() -> None:
    _LOCAL_PLANS.clear()
    _OFFSETS.clear()


def _boundary_offset(
    left: PlanPiece | None,
    right: PlanPiece | None,
    left_in_size: int,
    size: int,
    known_in: int | None,
    known_out: int | None,
) -> int:
    """Offset of the boundary tensor (``size`` bytes) between ``left`` (writes it) and
    ``right`` (reads it), against their buffers placed before it; ``known_in`` /
    ``known_out``: offsets of ``left``'s input / ``right``'s output if already placed."""
    placed: list[tuple[int, int]] = []
    if left is not None:  # buffers alive at its last scope
        placed += _local(left, left_in_size, known_in, None, (size, left.ops - 1))[1]
        if known_in is not None and left.entry_last == left.ops:
            placed.append((known_in, known_in + left_in_size))
    if right is not None:  # buffers alive until it is last read
        placed += _local(right, size, None, known_out, (size, -1))[2]
        if known_out is not None and right.entry_last == right.ops:
            placed.append((known_out, known_out + right.out_size))
    return _fit(placed, size) if placed else 0


def chain_high_water(pieces: Sequence[PlanPiece], input_size: int) -> int:
    """``plan_greedy(...).high_water`` of the whole chain (no offline offsets)."""
    count = len(pieces)
    sizes = [input_size]
    sizes += [p.out_size for p in pieces]  # Z_0 .. Z_count
    # A boundary larger than every later one is a *cut*: it and the boundaries before it are
    # placed before, and without regard to, anything after it; and first fit puts a buffer
    # right above a conflicting one at most, so nothing after a cut ends higher than the cut
    # plus every later buffer (``rest``). Segments between cuts are planned in turn until the
    # rest cannot raise the high-water mark.
    rest = [0] * (count + 1)
    cuts = [count]
    for z in range(count - 1, -1, -1):
        rest[z] = rest[z + 1] + sizes[z + 1] + pieces[z].own_bytes
        if sizes[z] > sizes[cuts[-1]]:
            cuts.append(z)
    offsets: list[int | None] = [None] * (count + 2)  # [-1]: the missing Z_{count+1}
    ends = [0] * (count + 1)
    high = first = 0
    for cut in reversed(cuts):
        # The segment's boundaries in planner order: largest first, equal sizes the later
        # request first; a neighbour is known when it came earlier in that order.
        segment = zip(sizes[first : cut + 1], range(first, cut + 1), strict=True)
        for size, z in sorted(segment, reverse=True):
            if z:
                left, left_in_size, known_in = pieces[z - 1], sizes[z - 1], offsets[z - 1]
            else:
                left, left_in_size, known_in = None, 0, None
            right = pieces[z] if z < count else None
            transient = (left is not None and left.transient) or (
                right is not None and right.transient
            )
            arguments = (left, right, left_in_size, size, known_in, offsets[z + 1])
            if transient:
                offset = _boundary_offset(*arguments)
            else:
                key = (None if left is None else left.ident,
                       None if right is None else right.ident, *arguments[2:])  # fmt: skip
                offset = _memoised(_OFFSETS, key, _boundary_offset, *arguments)
            offsets[z] = offset
            ends[z] = offset + size
            if offset + size > high:
                high = offset + size
        for j in range(max(first - 1, 0), cut):  # pieces with both boundaries placed
            # Nothing in a piece ends above its higher boundary plus all its own buffers.
            if max(ends[j], ends[j + 1]) + pieces[j].own_bytes > high:
                local = _local(pieces[j], sizes[j], offsets[j], offsets[j + 1], None)[0]
                if local > high:
                    high = local
        if ends[cut] + rest[cut] <= high:
            break
        first = cut + 1
    return high
