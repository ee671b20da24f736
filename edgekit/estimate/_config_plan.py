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
from collections.abc import Sequence
from dataclasses import dataclass, field

_SCRATCH = 1 << 40  # request-order class of scratch buffers: after every tensor
_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class PlanPiece:
    """A piece's planned buffers; scopes are 1 (its first op) .. ``ops``."""

    ops: int
    entry_last: int  # last scope reading Z_in
    out_size: int  # Z_out, its last op's output
    # (size, class, first, last) of its own buffers in planner order: largest first, equal
    # sizes in reverse request order (class: op index, or _SCRATCH + n for scratch).
    buffers: tuple[tuple[int, int, int, int], ...]
    ident: int = field(default_factory=lambda: next(_ids))


def plan_piece(
    ops: int,
    entry_last: int,
    sizes: Sequence[int],
    lasts: Sequence[int],
    scratch: Sequence[int],
    scratch_scopes: Sequence[int],
) -> PlanPiece:
    """``sizes``/``lasts``: every op output (the last one is Z_out); all sizes aligned."""
    buffers = [(sizes[i], i, i + 1, lasts[i]) for i in range(ops - 1)]
    buffers += [
        (size, _SCRATCH + n, scope, scope)
        for n, (size, scope) in enumerate(zip(scratch, scratch_scopes, strict=True))
    ]
    buffers.sort(key=lambda b: (b[0], b[1]), reverse=True)
    return PlanPiece(ops, entry_last, sizes[-1], tuple(buffers))


def _fit(placed: list[tuple[int, int]], size: int) -> int:
    offset = 0
    for start, end in sorted(placed):
        if start - offset >= size:
            break
        if end > offset:
            offset = end
    return offset


@functools.lru_cache(maxsize=262144)
def _local(
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
    ops = piece.ops
    alive: list[list[tuple[int, int]]] = [[] for _ in range(ops + 1)]
    # The boundary tensors, in planner order among the piece's buffers (Z_in is requested
    # before every buffer of the piece, Z_out after its op outputs and before its scratch).
    boundaries = []
    if in_offset is not None:
        boundaries.append(((in_size, -1), in_offset, in_size, 0, piece.entry_last))
    if out_offset is not None:
        boundaries.append(((piece.out_size, ops - 1), out_offset, piece.out_size, ops, ops))
    boundaries.sort(reverse=True)
    high = 0
    for size, klass, first, last in piece.buffers:
        if limit is not None and (size, klass) < limit:
            break
        while boundaries and boundaries[0][0] > (size, klass):
            _, offset, b_size, b_first, b_last = boundaries.pop(0)
            for scope in alive[b_first : b_last + 1]:
                scope.append((offset, offset + b_size))
        scopes = alive[first : last + 1]
        placed = [p for scope in scopes for p in scope]
        offset = _fit(placed, size) if placed else 0
        item = (offset, offset + size)
        for scope in scopes:
            scope.append(item)
        if offset + size > high:
            high = offset + size
    out_side = tuple(alive[ops])
    in_side = tuple(p for scope in alive[: piece.entry_last + 1] for p in scope)
    return high, out_side, in_side


def clear_plan_cache() -> None:
    _local.cache_clear()


def chain_high_water(pieces: Sequence[PlanPiece], input_size: int) -> int:
    """``plan_greedy(...).high_water`` of the whole chain (no offline offsets)."""
    count = len(pieces)
    sizes = [input_size] + [p.out_size for p in pieces]  # Z_0 .. Z_count
    offsets: list[int | None] = [None] * (count + 1)

    def before(a: int, b: int) -> bool:
        """Is boundary a placed before boundary b? (size, then the later request first)"""
        return (sizes[a], a) > (sizes[b], b)

    for z in sorted(range(count + 1), key=lambda z: (sizes[z], z), reverse=True):
        size = sizes[z]
        placed: list[tuple[int, int]] = []
        if z > 0:  # the piece writing it: buffers alive at its last scope
            piece = pieces[z - 1]
            known_in = offsets[z - 1] if before(z - 1, z) else None
            placed += _local(piece, sizes[z - 1], known_in, None, (size, piece.ops - 1))[1]
            if known_in is not None and piece.entry_last == piece.ops:
                placed.append((known_in, known_in + sizes[z - 1]))
        if z < count:  # the piece reading it: buffers alive until it is last read
            piece = pieces[z]
            known_out = offsets[z + 1] if before(z + 1, z) else None
            placed += _local(piece, size, None, known_out, (size, -1))[2]
            if known_out is not None and piece.entry_last == piece.ops:
                placed.append((known_out, known_out + sizes[z + 1]))
        offsets[z] = _fit(placed, size) if placed else 0
    high = max(o + s for o, s in zip(offsets, sizes, strict=True))  # type: ignore[operator]
    for j, piece in enumerate(pieces):
        high = max(high, _local(piece, sizes[j], offsets[j], offsets[j + 1], None)[0])
    return high
