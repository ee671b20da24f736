"""Fast arena and flash of a config: cached pieces of the synthesised graph, assembled.

A graph is a chain of pieces (see :mod:`edgekit.estimate._config_spaces`) and each piece only
reads the previous piece's output, so everything the memory model needs from a piece can be
computed once, on the piece alone, and cached: its operators' signatures, output sizes and the
scopes where its tensors are last read (relative to the piece), how many tensors it adds, and
its flash bytes. A config is then a concatenation of cached pieces; constants merged by value
across pieces (axes, the LayerNorm epsilon) and buffers with equal data (zero biases of one
length) are counted once when assembling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from edgekit.estimate._config_arena import (
    ArenaFigures,
    OpKey,
    TailSummary,
    arena_figures,
    op_profile,
    summarize,
)
from edgekit.estimate._config_graph import (
    FLASH_OVERHEAD,
    FlashTerms,
    GraphBuilder,
    Tensor,
    tensor_bytes,
)
from edgekit.estimate._config_plan import PlanPiece, chain_high_water, clear_plan_cache, plan_piece
from edgekit.estimate._config_spaces import (
    INPUT_NAME,
    build_piece,
    piece_entry_shape,
    pieces_of,
    start,
)
from edgekit.estimate.runtime import RuntimeConfig
from edgekit.spaces.tiny_cnn import TinyCnnConfig
from edgekit.spaces.tiny_vit import TinyVitConfig

SpaceConfig = TinyCnnConfig | TinyVitConfig


def _weigh(terms: FlashTerms) -> int:
    """Flash bytes of some objects: payload plus the calibrated per-object overheads."""
    return terms.payload + sum(FLASH_OVERHEAD.get(k, 0) * n for k, n in terms.counts.items())


@dataclass(frozen=True)
class Piece:
    keys: tuple[OpKey, ...]
    sizes: tuple[int, ...]  # bytes of each op's output
    lasts: tuple[int, ...]  # scope (1 = the piece's first op) of its last reader; 0: next piece
    entry_last: int  # scope of the last op reading the piece's input
    tensors: int  # tensors it adds, constants merged across pieces left out
    merged: tuple[tuple[tuple, int], ...]  # (merge key, flash bytes) of merged constants
    shared: tuple[tuple[tuple, int], ...]  # (same-data key, flash bytes of the buffer)
    flash: int  # flash bytes of everything else it adds
    opcodes: frozenset[str]


@functools.lru_cache(maxsize=65536)
def piece(kind: str, key: object) -> Piece:
    """Build one piece on its own builder and summarise it."""
    b = GraphBuilder()
    entry_node, entry = start(b, piece_entry_shape(kind, key), role="entry")
    build_piece(b, kind, key, (entry_node, entry))
    ops, tensors = b.finish()
    produced = {id(op.output): i for i, op in enumerate(ops)}
    lasts = [0] * len(ops)
    entry_last = 0
    for scope, op in enumerate(ops, start=1):
        for tensor in op.inputs:
            if tensor is None or tensor.constant:
                continue
            if tensor is entry:
                entry_last = scope
            else:
                lasts[produced[id(tensor)]] = scope
    assert all(lasts[:-1]) and not lasts[-1], "only a piece's last output may leave it"
    terms = FlashTerms()
    merged: dict[tuple, int] = {}
    shared: dict[tuple, int] = {}
    count = 0
    for tensor in tensors:
        if tensor is entry:
            continue
        if tensor.merge_key is not None:
            alone = FlashTerms()
            alone.add_tensor(tensor)
            merged[tensor.merge_key] = _weigh(alone)
            continue
        count += 1
        terms.add_tensor(tensor, with_data=tensor.same_data_as is None)
        if tensor.same_data_as is not None:
            buffer = FlashTerms()
            buffer.add_buffer(tensor_bytes(tensor)[1])
            shared[tensor.same_data_as] = _weigh(buffer)
    for op in ops:
        terms.add_op(op)
    return Piece(
        keys=tuple(op.key() for op in ops),
        sizes=tuple(op.output.nbytes for op in ops),
        lasts=tuple(lasts),
        entry_last=entry_last,
        tensors=count,
        merged=tuple(merged.items()),
        shared=tuple(shared.items()),
        flash=_weigh(terms),
        opcodes=frozenset(op.opcode for op in ops),
    )


@dataclass(frozen=True)
class _Bundle:
    """A piece with its runtime-dependent summaries."""

    part: Piece
    tail: TailSummary
    plan: PlanPiece
    requests: int


# runtime -> (piece kind, key) -> bundle; one lookup per piece and config.
_BUNDLES: dict[RuntimeConfig, dict[tuple[str, object], _Bundle]] = {}
_MAX_BUNDLES = 200_000


def _bundle(spec: tuple[str, object], config: RuntimeConfig) -> _Bundle:
    kind, key = spec
    part = piece(kind, key)
    tail = summarize([op_profile(k, config) for k in part.keys], config)
    alignment = config.alignment
    sizes = [-(-size // alignment) * alignment for size in part.sizes]
    plan = plan_piece(
        len(sizes), part.entry_last, sizes, part.lasts, tail.scratch, tail.scratch_scopes
    )
    return _Bundle(part, tail, plan, len(sizes) + len(tail.scratch))


def clear_caches() -> None:
    """Forget every cached piece (for timing cold starts)."""
    _BUNDLES.clear()
    piece.cache_clear()
    op_profile.cache_clear()
    clear_plan_cache()


@functools.lru_cache(maxsize=16)
def _input_flash(shape: tuple[int, ...]) -> int:
    terms = FlashTerms()
    terms.add_tensor(Tensor(shape, name=INPUT_NAME))
    return _weigh(terms)


def fast_figures(cfg: SpaceConfig, config: RuntimeConfig) -> tuple[ArenaFigures, int]:
    """(arena figures, flash bytes) of ``cfg``, equal to the whole-graph synthesis's."""
    specs = pieces_of(cfg)
    input_shape = piece_entry_shape(*specs[0])
    input_bytes = 1
    for d in input_shape:
        input_bytes *= d
    cache = _BUNDLES.get(config)
    if cache is None or len(cache) > _MAX_BUNDLES:
        cache = _BUNDLES[config] = {}
    runs: list[TailSummary] = []
    plans: list[PlanPiece] = []
    tensor_count = request_count = 1
    merged: dict[tuple, int] = {}
    shared: dict[tuple, int] = {}
    opcodes: set[str] = set()
    flash = FLASH_OVERHEAD["constant"] + _input_flash(input_shape)
    for spec in specs:
        bundle = cache.get(spec)
        if bundle is None:
            bundle = cache[spec] = _bundle(spec, config)
        part = bundle.part
        runs.append(bundle.tail)
        plans.append(bundle.plan)
        tensor_count += part.tensors
        request_count += bundle.requests
        if part.merged:
            merged.update(part.merged)
        if part.shared:
            shared.update(part.shared)
        opcodes |= part.opcodes
        flash += part.flash
    tensor_count += len(merged)
    flash += sum(merged.values()) + sum(shared.values())
    flash += FLASH_OVERHEAD["opcode_kind"] * len(opcodes)
    alignment = config.alignment
    high_water = chain_high_water(plans, -(-input_bytes // alignment) * alignment)
    figures = arena_figures(runs, high_water, request_count, tensor_count, config)
    return figures, flash
