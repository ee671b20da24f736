"""Fast arena and flash of a config: cached pieces of the synthesised graph, assembled.

A graph is a chain of pieces (see :mod:`edgekit.estimate._config_spaces`) and each piece only
reads the previous piece's output, so everything the memory model needs from a piece can be
computed once, on the piece alone, and cached: its operators' signatures, output sizes and the
scopes where its tensors are last read (relative to the piece), how many tensors it adds, and
its flash bytes. A config is then a concatenation of cached pieces; constants merged by value
across pieces (axes, the LayerNorm epsilon) and buffers with equal data (zero biases of one
length) are counted once when assembling.

Speed for a search loop (new configs; see ``benchmarks/memory_config_accuracy.py``): a piece is
found by a key read straight off the config's fields (:func:`_cnn_keys`, :func:`_vit_keys`),
so no layer plan is built unless a key is new; a whole-image block of a kind seen before at
another map size is sized from its template (:func:`_sized_block`), not synthesised. Once a
process has estimated a few hundred configs, compiled code (numba) takes over: every cached
piece is a row of int arrays and one call adds up a config's pieces, counts shared constants
once, plans the chain and does the arena arithmetic (:mod:`edgekit.estimate._combine`). A
patched tiny-cnn whose patches cover two stages has a patched piece per (kernel sizes,
expand ratios) of its first stage, which is rarely seen before: it is assembled per config
from per-(layer, variant) templates in compiled code (see
:mod:`edgekit.estimate._patched_kernel`), in one compiled call with finding the rows of the
config's later pieces and the combination when those pieces are known
(:func:`_fused_figures`), else on its own (:func:`_kernel_patched_parts`), or patch by patch in
Python (:func:`_assembled_patched`, a few milliseconds) before that and without numba.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgekit.errors import ConfigError
from edgekit.estimate import _combine, _patched_kernel
from edgekit.estimate._config_arena import (
    ArenaFigures,
    OpKey,
    RunTerms,
    TailSummary,
    _fixed,
    arena_from_terms,
    compose_runs,
    op_profile,
    run_terms,
    summarize,
)
from edgekit.estimate._config_graph import (
    GraphBuilder,
    Op,
    Tensor,
    op_terms,
    shared_terms,
    tensor_terms,
)
from edgekit.estimate._config_plan import PlanPiece, chain_high_water, clear_plan_cache, plan_piece
from edgekit.estimate._config_spaces import (
    INPUT_NAME,
    PATCH_NAME,
    SpaceConfig,
    build_piece,
    cnn_patch_slice,
    cnn_patch_unit,
    layer_key,
    piece_entry_shape,
    pieces_of,
    start,
)
from edgekit.estimate._flat_plan import FlatPiece, compiled, flat_high_water
from edgekit.estimate._flatbuffer import (
    OPCODES,
    FlashTerms,
    Layout,
    file_bytes,
    lists_bytes,
    model_frame,
    operator_bytes,
    vtable_bytes,
)
from edgekit.estimate.arena import _MAX_SCRATCH_BUFFERS_PER_OP, _PLANNER_BYTES_PER_BUFFER
from edgekit.estimate.runtime import RuntimeConfig
from edgekit.spaces._base import is_factorised, projection_rank
from edgekit.spaces.tiny_cnn import (
    MAX_DEPTH,
    NUM_STAGES,
    STAGE_STRIDES,
    CnnLayer,
    TinyCnnConfig,
    axis_plan,
    layer_plan,
    make_divisible,
    same_padding,
    stage_channels,
)
from edgekit.spaces.tiny_vit import TinyVitConfig

# Flash figures of pieces are sums, so each is packed into one int that adds up field by
# field: bytes, int64 vectors, fillers (see _flatbuffer.FlashTerms), then operators per opcode.
# Table layouts are a set (one vtable each): a bit set over _LAYOUT_BITS.
_BYTES_BITS = 40
_COUNT_BITS = 16
_BYTES_MASK = (1 << _BYTES_BITS) - 1
_COUNT_MASK = (1 << _COUNT_BITS) - 1
_OPCODE_SHIFT = {opcode: _BYTES_BITS + _COUNT_BITS * (2 + i) for i, opcode in enumerate(OPCODES)}
_LAYOUT_BITS: dict[Layout, int] = {}


def _pack(terms: FlashTerms, ops: Sequence[Op] = ()) -> int:
    packed = terms.bytes + (terms.int64_vectors << _BYTES_BITS)
    packed += terms.fillers << (_BYTES_BITS + _COUNT_BITS)
    for op in ops:
        packed += 1 << _OPCODE_SHIFT[op.opcode]
    return packed


def _layout_bits(layouts: set[Layout] | frozenset[Layout]) -> int:
    bits = 0
    for layout in layouts:
        bits |= 1 << _LAYOUT_BITS.setdefault(layout, len(_LAYOUT_BITS))
    return bits


_FLASH_COLUMNS = 3 + len(OPCODES)


def _columns(packed: int) -> list[int]:
    """A packed flash figure (see _pack) as int columns: bytes, int64 vectors, fillers, then
    operators per opcode."""
    counts = [
        (packed >> (_BYTES_BITS + _COUNT_BITS * i)) & _COUNT_MASK
        for i in range(_FLASH_COLUMNS - 1)
    ]
    return [packed & _BYTES_MASK, *counts]


def _packed(columns: Sequence[int]) -> int:
    """:func:`_columns` undone."""
    packed = columns[0]
    for i, count in enumerate(columns[1:]):
        packed += count << (_BYTES_BITS + _COUNT_BITS * i)
    return packed


_OPCODE_NAMES = tuple(OPCODES)  # in _OPCODE_SHIFT's order
# (opcodes as a bit set, first opcode, layout bits) -> the file's bytes that depend on them
# alone: its frame and the vtables of its tables' layouts
_FRAMES: dict[tuple[int, str, int], int] = {}


def _flash_from_columns(
    columns: Sequence[int], layout_bits: int, first_opcode: str, tensor_count: int
) -> int:
    """The file's size from a config's flash figure (as columns, see _columns) and layout
    bits."""
    ops = operators = mask = 0
    for i, count in enumerate(columns[3:]):
        if count:
            mask |= 1 << i
            ops += count
            opcode = _OPCODE_NAMES[i]
            operators += count * operator_bytes(opcode, opcode == first_opcode)
    return _file_size(
        columns[:3], ops, operators, mask, layout_bits, first_opcode, tensor_count
    )


# Each opcode's operator table (see _flash_from_columns), of the model's first opcode or
# not, in _OPCODE_NAMES's order; the compiled combination adds them up.
_OPERATOR_BYTES = np.array(
    [[operator_bytes(opcode, first) for opcode in _OPCODE_NAMES] for first in (False, True)],
    np.int64,
)
_OPCODE_INDEX = {opcode: i for i, opcode in enumerate(_OPCODE_NAMES)}


def _file_size(
    columns: Sequence[int], ops: int, operators: int, mask: int, layout_bits: int,
    first_opcode: str, tensor_count: int,
) -> int:
    """The file's size from its bytes, int64 vectors and fillers (``columns``), its operators
    (count, bytes of their tables, bit set of their opcodes) and layout bits."""
    framed = _FRAMES.get((mask, first_opcode, layout_bits))
    if framed is None:
        opcodes = frozenset(name for i, name in enumerate(_OPCODE_NAMES) if mask >> i & 1)
        frame_bytes, frame_bits = _frame(opcodes, first_opcode)
        if len(_FRAMES) > 65536:  # bounded, like the other caches
            _FRAMES.clear()
        framed = _FRAMES[(mask, first_opcode, layout_bits)] = frame_bytes + _vtable_bytes(
            layout_bits | frame_bits
        )
    return file_bytes(
        columns[0] + framed + lists_bytes(tensor_count, ops) + operators, 0, columns[1],
        columns[2],
    )  # fmt: skip


@functools.cache
def _frame(opcodes: frozenset[str], first_opcode: str) -> tuple[int, int]:
    frame_bytes, layouts = model_frame(opcodes, first_opcode)
    return frame_bytes, _layout_bits(layouts)


def _vtable_bytes(bits: int) -> int:
    return sum(vtable_bytes(layout) for layout, bit in _LAYOUT_BITS.items() if bits >> bit & 1)


@dataclass(frozen=True)
class Piece:
    keys: tuple[OpKey, ...]
    sizes: tuple[int, ...]  # bytes of each op's output
    lasts: tuple[int, ...]  # scope (1 = the piece's first op) of its last reader; 0: next piece
    entry_last: int  # scope of the last op reading the piece's input
    tensors: int  # tensors it adds, constants merged across pieces left out
    # Flash packed (see _pack), as every flash figure of a piece:
    merged: tuple[tuple[tuple, int], ...]  # (merge key, flash) of merged constants
    shared: tuple[tuple[tuple, int], ...]  # (same-data key, flash of the buffer or vector)
    flash: int  # of everything else it adds
    layouts: frozenset[Layout]  # of every table it holds, merged and shared ones included
    first_opcode: str
    entry_lasts: tuple[int, ...] = ()  # scope of the last op reading each entry


# Only needed until its bundles are made (patched pieces are large): a few recent ones.
@functools.lru_cache(maxsize=256)
def piece(kind: str, key: object) -> Piece:
    """Build one piece on its own builder and summarise it."""
    b = GraphBuilder()
    entry_node, entry = start(b, piece_entry_shape(kind, key), role="entry")
    build_piece(b, kind, key, (entry_node, entry))
    return _summarise(b, (entry,))


def _summarise(b: GraphBuilder, entries: tuple[Tensor, ...], by_value: bool = True) -> Piece:
    """A piece's summary from its builder; ``entries``: the tensors it reads from before it
    (``entry_last`` is the first one's). ``by_value`` False leaves the int32 constants merged
    by value (slice bounds, paddings) out of ``merged`` and ``shared``: a patch's template,
    whose caller counts them from their values."""
    ops, tensors = b.finish()
    produced = {id(op.output): i for i, op in enumerate(ops)}
    lasts = [0] * len(ops)
    entry_lasts = [0] * len(entries)
    entry_index = {id(entry): i for i, entry in enumerate(entries)}
    for scope, op in enumerate(ops, start=1):
        for tensor in op.inputs:
            if tensor is None or tensor.constant:
                continue
            if id(tensor) in entry_index:
                entry_lasts[entry_index[id(tensor)]] = scope
            else:
                lasts[produced[id(tensor)]] = scope
    assert all(lasts[:-1]) and not lasts[-1], "only a piece's last output may leave it"
    terms = FlashTerms()
    layouts: set[Layout] = set()
    merged: dict[tuple, int] = {}
    shared: dict[tuple, int] = {}
    count = 0
    for tensor in tensors:
        if id(tensor) in entry_index:
            continue
        own = tensor_terms(tensor)
        layouts |= own.layouts
        counted = by_value or tensor.role != "index"
        for key, part in shared_terms(tensor):
            layouts |= part.layouts
            if counted:
                shared[key] = _pack(part)
        if tensor.merge_key is not None:
            if counted:
                merged[tensor.merge_key] = _pack(own)
            continue
        count += 1
        terms.add(own)
    for op in ops:
        terms.add(op_terms(op))
    layouts |= terms.layouts
    return Piece(
        keys=tuple(op.key() for op in ops),
        sizes=tuple(op.output.nbytes for op in ops),
        lasts=tuple(lasts),
        entry_last=entry_lasts[0],
        tensors=count,
        merged=tuple(merged.items()),
        shared=tuple(shared.items()),
        flash=_pack(terms, ops),
        layouts=frozenset(layouts),
        first_opcode=ops[0].opcode if ops else "",
        entry_lasts=tuple(entry_lasts),
    )


class _Bundle(NamedTuple):
    """A piece with its runtime-dependent summaries: all a config's assembly reads (a tuple,
    so the assembly loop unpacks it in one step)."""

    tensors: int
    requests: int  # planned buffers: op outputs and scratch buffers
    flash: int  # packed, see _pack
    layouts: int  # bit set, see _layout_bits
    first_opcode: str
    # as in Piece, keys numbered (see _key_number); pairs, or a dict (a patched piece's)
    merged: tuple[tuple[int, int], ...] | dict[int, int]
    shared: tuple[tuple[int, int], ...] | dict[int, int]
    plan: PlanPiece | FlatPiece  # FlatPiece: only for the flat planner
    run: RunTerms


_KEY_NUMBERS: dict[tuple, int] = {}


_KEY_TUPLES: list[tuple] = []  # number -> key


def _key_number(key: tuple) -> int:
    """A number per merge key: nested tuples hash slowly, and a patched piece has dozens."""
    number = _KEY_NUMBERS.get(key)
    if number is None:
        number = _KEY_NUMBERS[key] = len(_KEY_TUPLES)
        _KEY_TUPLES.append(key)
    return number


# runtime -> fast key (see _cnn_keys / _vit_keys) -> bundle; one lookup per piece and config.
_BUNDLES: dict[RuntimeConfig, dict[tuple, _Bundle]] = {}
_MAX_BUNDLES = 20_000  # a patched piece's bundle can take ~0.1 MB


def clear_caches() -> None:
    """Forget every cached piece (for timing cold starts)."""
    _BUNDLES.clear()
    _bundle.cache_clear()
    _unit.cache_clear()
    _concats.cache_clear()
    _concat_terms.cache_clear()
    _patch_geometry.cache_clear()
    _TEMPLATES.clear()
    _BLOCK_TEMPLATES.clear()
    _BLOCK_FIELDS.clear()
    _ROWS.clear()
    piece.cache_clear()
    op_profile.cache_clear()
    clear_plan_cache()


# A whole-image block's key is an int (see _combine.KERNEL_SHIFT): an int hashes faster than a
# tuple, and a config looks up ~12 of them.
_FIELD_LIMIT = 1 << _combine.KERNEL_SHIFT
# (width, rank ratio, fused stages) -> a block key's fields above its size, kernel and stride
# at [(stage * 2 + later block) * EXPANDS + expand ratio]: as a list (None: not worked out
# yet), and as the array _combine._later_rows reads (-1: not worked out yet; last: the head's
# channels).
_BLOCK_FIELDS: dict[tuple[float, float, int], tuple[list[int | None], np.ndarray]] = {}
_EXPANDS = _combine.EXPANDS
_FIELD_NUMBERS: dict[tuple[int, ...], int] = {}  # a block's fields -> their number


def _block_fields(
    width: float, ratio: float, fused: int, stage: int, later: bool, expand: int
) -> int:
    _, first_channels, stage_out = stage_channels(width)
    # A stage's first block takes the previous stage's channels (the first block's, stage 0).
    channels = stage_out[stage - (not later)] if stage or later else first_channels
    hidden = make_divisible(channels * expand)
    # the fused conv is always 3x3 and never low-rank
    expand_rank = 0 if stage < fused else _rank(ratio, channels, hidden)
    c_out = stage_out[stage]
    fields = (channels, hidden, c_out, expand_rank, _rank(ratio, hidden, c_out), int(later))
    if max(fields) >= _FIELD_LIMIT:
        raise ConfigError(
            f"width_mult={width}: {max(fields)} channels; expected fewer than {_FIELD_LIMIT}"
        )
    number = _FIELD_NUMBERS.setdefault(fields, len(_FIELD_NUMBERS))
    return number << _combine.NUMBER_SHIFT


def block_size(key: int) -> int:
    """The input map size of the block with this key (see :func:`_cnn_keys`)."""
    return key & (_FIELD_LIMIT - 1)


def _first_key(cfg: TinyCnnConfig) -> tuple:
    """The key of the first piece of a whole-image or one-stage patched tiny-cnn (see
    :func:`_cnn_keys`): the stem, or the patched stem and first block (no low-rank convs)."""
    if cfg.patch_grid == 1:
        return ("stem", cfg.resolution, cfg.stem_stride, cfg.width_mult, cfg.in_channels)
    strides = (cfg.stem_stride, cfg.first_stage_stride)
    return (
        "patched", cfg.resolution, strides, cfg.width_mult, cfg.patch_grid, cfg.in_channels
    )  # fmt: skip


def _cnn_keys(cfg: TinyCnnConfig) -> list[tuple | int]:
    """One key per piece of :func:`pieces_of` (same order), computed from the config's fields
    without a layer plan: each holds what shapes its piece and nothing else, so equal keys mean
    equal pieces. A block's key is its input map size, kernel (0: fused), stride, channels,
    hidden channels, output channels, ranks and whether it is a stage's later block, not its
    stage or position: blocks of any stage or resolution that agree share one piece (its
    layer names only order ops inside it, where the chain of layers fixes the order anyway).
    Block keys are ints (see _combine.KERNEL_SHIFT), the others tuples."""
    res, width, ratio = cfg.resolution, cfg.width_mult, cfg.rank_ratio
    kernels, expands, depths = cfg.kernel_sizes, cfg.expand_ratios, cfg.depths
    fused = cfg.fused_stages
    if res >= _FIELD_LIMIT:
        raise ConfigError(f"resolution={res}; expected below {_FIELD_LIMIT}")
    first_stage = 0  # the first stage run on the whole image
    if cfg.patch_grid == 1 or cfg.patch_stages == 1:
        keys: list[tuple | int] = [_first_key(cfg)]
    else:
        d = depths[0]
        keys = [(
            "patched", res, (cfg.stem_stride, cfg.first_stage_stride), width, cfg.patch_grid,
            cfg.in_channels, ratio, kernels[:d], expands[:d], fused > 0,
        )]  # fmt: skip
        first_stage = 1
    tables = _BLOCK_FIELDS.get((width, ratio, fused))
    if tables is None:
        tables = _BLOCK_FIELDS[(width, ratio, fused)] = (
            [None] * (2 * NUM_STAGES * _EXPANDS),
            np.full(2 * NUM_STAGES * _EXPANDS + 1, -1, np.int64),
        )
        tables[1][-1] = stage_channels(width)[2][-1]
    table = tables[0]
    size = -(-res // cfg.stem_stride)  # the first block's depthwise conv has stride 1
    stage_strides = (cfg.first_stage_stride, *STAGE_STRIDES[1:])
    for stage, depth in enumerate(depths):
        stride = stage_strides[stage]
        for block in range(depth):
            if stage >= first_stage:
                i = MAX_DEPTH * stage + block
                expand = expands[i]
                at = (2 * stage + (block > 0)) * _EXPANDS + expand
                fields = table[at] if 0 < expand < _EXPANDS else None
                if fields is None:
                    fields = _block_fields(width, ratio, fused, stage, block > 0, expand)
                    if 0 < expand < _EXPANDS:
                        table[at] = tables[1][at] = fields
                kernel = 0 if stage < fused else kernels[i]
                keys.append(
                    size | kernel << _combine.KERNEL_SHIFT | stride << _combine.STRIDE_SHIFT
                    | fields
                )
            size = -(-size // stride)
            stride = 1
    keys.append(("head", size, stage_channels(width)[2][-1], cfg.num_classes))
    return keys


@functools.lru_cache(maxsize=4096)
def _rank(ratio: float, c_in: int, c_out: int) -> int:
    """The rank of a 1x1 conv as the layer plan makes it (0: dense)."""
    rank = projection_rank(ratio, c_in, c_out)
    return rank if is_factorised(rank, c_in, c_out) else 0


def _vit_keys(cfg: TinyVitConfig) -> list[tuple]:
    res, patch, embed = cfg.resolution, cfg.patch_size, cfg.embed_dim
    tokens, ratio = (res // patch) ** 2, cfg.rank_ratio
    keys = [("prologue", res, patch, embed, cfg.in_channels)]
    for heads, mlp in zip(cfg.num_heads[: cfg.depth], cfg.mlp_ratio, strict=False):
        keys.append((tokens, embed, heads, mlp, ratio))
    keys.append(("epilogue", tokens, embed, cfg.num_classes))
    return keys


def _bundles(
    cfg: SpaceConfig, config: RuntimeConfig, flat: bool = False, later_only: bool = False
) -> list[_Bundle]:
    """The bundle of each piece of ``cfg``; ``flat``: planned by the flat planner (whose
    columns are all a two-stage patched piece then needs); ``later_only``: all but a
    two-stage patched piece (the compiled call assembles it)."""
    specs: list[tuple[str, object]] = []  # made only when needed (it plans every layer)
    if isinstance(cfg, TinyCnnConfig):
        keys = _cnn_keys(cfg)
    elif isinstance(cfg, TinyVitConfig):
        keys = _vit_keys(cfg)
    else:  # tiny-resnet: few distinct pieces, so keyed by the piece specs themselves
        keys = specs = pieces_of(cfg)  # type: ignore[assignment]
    cache = _BUNDLES.get(config)
    if cache is None or len(cache) > _MAX_BUNDLES:
        cache = _BUNDLES[config] = {}
    try:
        return [cache[key] for key in keys]
    except KeyError:  # a key never seen: its piece may still be known under another key
        pass
    bundles = []
    for index, key in enumerate(keys):
        bundle = cache.get(key)
        if bundle is None:
            if isinstance(key, int):
                # A tiny-cnn block: of a kind seen before at another size, or made from its
                # spec.
                template = _block_template(key, config)
                if template is None:
                    specs = specs or pieces_of(cfg)
                    template = _block_template(key, config, specs[index])
                    assert template is not None
                bundle = cache[key] = _sized_block(template, block_size(key), config)
            elif key[0] == "patched" and cfg.patch_stages == 2:  # type: ignore[union-attr]
                if later_only:
                    continue
                # Rarely seen again (and large): assembled anew, not kept.
                bundle = _patched_bundle(cfg, config, flat)  # type: ignore[arg-type]
            else:
                specs = specs or pieces_of(cfg)
                assert len(specs) == len(keys), (keys, specs)
                bundle = cache[key] = _bundle(specs[index], config)
        bundles.append(bundle)
    return bundles


class _BlockTemplate(NamedTuple):
    """A whole-image block (see _cnn_keys) at any map size: the size only sizes its buffers."""

    bundle: _Bundle  # at the size it was built for
    outputs: tuple[tuple[int, int], ...]  # per op: (stride of its output's size, channels)
    entry_last: int
    lasts: tuple[int, ...]
    scratch: tuple[int, ...]
    scratch_scopes: tuple[int, ...]


_BLOCK_TEMPLATES: dict[tuple[int, RuntimeConfig], _BlockTemplate] = {}


def _block_template(
    key: int, config: RuntimeConfig, spec: tuple[str, object] | None = None
) -> _BlockTemplate | None:
    """The template of the block ``key`` (a _cnn_keys block key): made from its ``spec``
    (None if it is not known yet and no spec is given)."""
    template_key = (key >> _combine.KERNEL_SHIFT, config)  # all but the size
    template = _BLOCK_TEMPLATES.get(template_key)
    if template is None and spec is not None:
        size, stride = block_size(key), (key >> _combine.STRIDE_SHIFT) & 255
        part = piece(*spec)
        tail = summarize([op_profile(k, config) for k in part.keys], config)
        outputs = []
        for op in part.keys:
            _, height, _, channels = op[2][0]
            outputs.append((stride if height != size else 1, channels))
        template = _BLOCK_TEMPLATES[template_key] = _BlockTemplate(
            _bundle(spec, config), tuple(outputs), part.entry_last, part.lasts, tail.scratch,
            tail.scratch_scopes,
        )  # fmt: skip
    return template


def _sized_block(template: _BlockTemplate, size: int, config: RuntimeConfig) -> _Bundle:
    """The bundle of a block whose input maps are ``size`` x ``size``."""
    alignment = config.alignment
    sizes = []
    for stride, channels in template.outputs:
        side = -(-size // stride)
        sizes.append(-(-side * side * channels // alignment) * alignment)
    plan = plan_piece(
        len(sizes), template.entry_last, sizes, template.lasts, template.scratch,
        template.scratch_scopes,
    )  # fmt: skip
    return template.bundle._replace(plan=plan)


@functools.lru_cache(maxsize=8192)
def _bundle(spec: tuple[str, object], config: RuntimeConfig) -> _Bundle:
    """Build a piece (on a key never seen) and summarise it for ``config``."""
    kind, key = spec
    part = piece(kind, key)
    tail = summarize([op_profile(k, config) for k in part.keys], config)
    alignment = config.alignment
    sizes = [-(-size // alignment) * alignment for size in part.sizes]
    plan = plan_piece(
        len(sizes), part.entry_last, sizes, part.lasts, tail.scratch, tail.scratch_scopes
    )
    merged = tuple((_key_number(key), flash) for key, flash in part.merged)
    shared = tuple((_key_number(key), flash) for key, flash in part.shared)
    return _Bundle(
        part.tensors, len(sizes) + len(tail.scratch), part.flash, _layout_bits(part.layouts),
        part.first_opcode, merged, shared, plan, run_terms(tail),
    )  # fmt: skip


class _Unit(NamedTuple):
    """One layer of one patch (or the slice of the image it reads), built on its own."""

    ops: int
    sizes: tuple[int, ...]  # aligned
    lasts: tuple[int, ...]
    entry_lasts: tuple[int, ...]  # of its input (and its residual's skip tensor)
    scratch: tuple[int, ...]
    scratch_scopes: tuple[int, ...]
    tensors: int
    flash: int
    layouts: int
    first_opcode: str
    merged: tuple[tuple[int, int], ...]  # (key number, flash) of merged constants
    shared: tuple[tuple[int, int], ...]
    run: RunTerms


@functools.lru_cache(maxsize=65536)
def _unit(
    key: tuple, in_shape: tuple[int, ...], skip_shape: tuple[int, ...] | None,
    config: RuntimeConfig,
) -> _Unit:  # fmt: skip
    """A patch's layer (``key``: see ``cnn_patch_unit``) or, with a region for ``key``, the
    slice of the image it starts from."""
    part = _unit_piece(key, in_shape, skip_shape)
    tail = summarize([op_profile(k, config) for k in part.keys], config)
    alignment = config.alignment
    return _Unit(
        len(part.keys), tuple(-(-size // alignment) * alignment for size in part.sizes),
        part.lasts, part.entry_lasts, tail.scratch, tail.scratch_scopes, part.tensors,
        part.flash, _layout_bits(part.layouts), part.first_opcode,
        tuple((_key_number(key), flash) for key, flash in part.merged),
        tuple((_key_number(key), flash) for key, flash in part.shared), run_terms(tail),
    )  # fmt: skip


def _unit_piece(
    key: tuple,
    in_shape: tuple[int, ...],
    skip_shape: tuple[int, ...] | None,
    by_value: bool = True,
) -> Piece:
    """:func:`_unit`'s piece (``by_value``: see :func:`_summarise`)."""
    b = GraphBuilder()
    if skip_shape is None:
        x_node, x = start(b, in_shape, role="entry")
        entries: tuple[Tensor, ...] = (x,)
        skip = None
    else:
        # As in the whole graph, the skip tensor's node is an ancestor of the input's (the
        # converter's order follows node names, so the name sorts as the block's first layer,
        # the residual's source: its expand or fused conv).
        skip_node, skip_tensor = start(b, skip_shape, role="entry")
        residual_from = key[0][-1]  # see layer_key
        x_node, x = b.node(f"{PATCH_NAME}/{residual_from}", skip_node), Tensor(in_shape)
        entries = (x, skip_tensor)
        skip = (skip_node, skip_tensor)
    if isinstance(key[0], int):
        cnn_patch_slice(b, (x_node, x), key)
    else:
        cnn_patch_unit(b, (x_node, x), skip, key)
    return _summarise(b, entries, by_value)


@functools.lru_cache(maxsize=4096)
def _concats(
    outputs: tuple[tuple[int, ...], ...], grid: int, config: RuntimeConfig
) -> tuple[list[Op], TailSummary, int, int]:
    """The patch outputs' CONCATENATIONs (each row, then the rows): ops, tail, flash
    (packed) and layout bits."""
    terms = FlashTerms()
    rows = []
    ops = []
    for i in range(grid):
        parts = [Tensor(shape) for shape in outputs[i * grid : (i + 1) * grid]]
        shape = (1, parts[0].shape[1], sum(p.shape[2] for p in parts), parts[0].shape[3])
        row = Tensor(shape, name=f"patch_row{i}/concat")
        ops.append(Op("CONCATENATION", "", tuple(parts), row, {"axis": 2}))
        rows.append(ops[-1].output)
    shape = (1, sum(r.shape[1] for r in rows), rows[0].shape[2], rows[0].shape[3])
    merge = Tensor(shape, name="patch_merge/concat")
    ops.append(Op("CONCATENATION", "", tuple(rows), merge, {"axis": 1}))
    for op in ops:
        terms.add(tensor_terms(op.output))
        terms.add(op_terms(op))
    tail = summarize([op_profile(op.key(), config) for op in ops], config)
    return ops, tail, _pack(terms, ops), _layout_bits(terms.layouts)


@functools.lru_cache(maxsize=4096)
def _patch_layer_key(layer: CnnLayer) -> tuple:
    """A patch's layer does not depend on the full map's size (nor on its MACs)."""
    return layer_key(dataclasses.replace(
        layer, in_shape=(0, 0, layer.in_shape[2]), out_shape=(0, 0, layer.out_shape[2]),
        pads=(0, 0, 0, 0), params=0, macs=0,
    ))  # fmt: skip


class _PatchLayer(NamedTuple):
    key: tuple  # see _patch_layer_key
    channels: int  # input channels
    number: int  # what its templates are found by (see TemplateStore.table)


_LAYER_NUMBERS: dict[tuple, int] = {}  # patch layer key -> its number, from 0 up


class _BlockLayers(NamedTuple):
    layers: tuple[_PatchLayer, ...]
    shapes: tuple[tuple[int, int, int], ...]  # (kernel, stride, skip source in the block or -1)
    numbers: tuple[int, ...]  # each layer's number
    shapes_number: int  # the shapes' number in _BLOCK_SHAPES


_BLOCK_SHAPES: dict[tuple[tuple[int, int, int], ...], int] = {}  # a block's shapes -> number


@functools.lru_cache(maxsize=4096)
def _stage_blocks(
    width: float, in_channels: int, rank: float, kernel: int, expand: int,
    strides: tuple[int, int], fused: bool,
) -> tuple[_BlockLayers, ...]:
    """The stem and first block, then every first-stage block (0 to MAX_DEPTH - 1) with this
    kernel and expand ratio, as a patch runs them: cut from one small config's layer plan (a
    config's own plan takes longer than the rest of its estimate; these do not depend on the
    resolution, nor a block on the blocks after it)."""
    cfg = TinyCnnConfig(
        num_classes=2, in_channels=in_channels, resolution=32, width_mult=width,
        rank_ratio=rank, patch_grid=1, patch_stages=1, depths=(MAX_DEPTH, 1, 1, 1),
        kernel_sizes=(kernel,) * 12, expand_ratios=(expand,) * 12, stem_stride=strides[0],
        first_stage_stride=strides[1], fused_stages=int(fused),
    )  # fmt: skip
    layers = layer_plan(cfg)
    stem = [layer for layer in layers if layer.is_conv and not layer.name.startswith("stages.")]
    blocks = [
        [layer for layer in layers if layer.name.startswith(f"stages.0.{block}.")]
        for block in range(MAX_DEPTH)
    ]
    return tuple(_patch_layers(block_layers) for block_layers in (stem, *blocks))


def _patch_layers(layers: Sequence[CnnLayer]) -> _BlockLayers:
    patch_layers = []
    for layer in layers:
        key = _patch_layer_key(layer)
        number = _LAYER_NUMBERS.setdefault(key, len(_LAYER_NUMBERS))
        patch_layers.append(_PatchLayer(key, layer.in_shape[2], number))
    # A residual adds the input of its block's first layer.
    index_of = {layer.key[0]: i for i, layer in enumerate(patch_layers)}
    shapes = tuple(
        (layer.key[4], layer.key[5], index_of[layer.key[-1]] if layer.key[-1] else -1)
        for layer in patch_layers
    )
    numbers = tuple(layer.number for layer in patch_layers)
    shapes_number = _BLOCK_SHAPES.setdefault(shapes, len(_BLOCK_SHAPES))
    return _BlockLayers(tuple(patch_layers), shapes, numbers, shapes_number)


@functools.lru_cache(maxsize=4096)
def _patch_axis(resolution: int, grid: int, shapes: tuple[tuple[int, int], ...]) -> tuple:
    """``axis_plan`` of a patched piece whose layers have these (kernel, stride) (rows and
    columns alike: maps are square)."""
    convs = []
    size = resolution
    for kernel, stride in shapes:
        out, before, _ = same_padding(size, kernel, stride)
        convs.append((size, kernel, stride, before))
        size = out
    if size < grid:
        raise _grid_too_fine(grid, size)
    return axis_plan(size, grid, tuple(convs))


def _grid_too_fine(grid: int, size: int) -> ConfigError:
    return ConfigError(
        f"patch_grid={grid}: the patched part's output is only {size}x{size}; "
        f"use a grid of at most {size}"
    )


class _FirstStage(NamedTuple):
    """The layers a patch over two stages runs (the stem, the first block, the first
    stage)."""

    layers: tuple[_PatchLayer, ...]
    shapes: tuple[tuple[int, int, int], ...]  # (kernel, stride, skip source or -1)
    numbers: np.ndarray  # each layer's number
    shapes_id: int  # the shapes' number (see _SHAPES): what a patch geometry is keyed by


# Each distinct first stage's shapes, by number: configs whose first stages differ in their
# channels only share them, and a number hashes faster than ~15 tuples.
_SHAPES: list[tuple[tuple[int, int, int], ...]] = []
_SHAPE_IDS: dict[tuple[tuple[int, int, int], ...], int] = {}
_SHAPE_ARRAYS: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # kernels, strides, sources
# (shapes number of a first stage's first layers (-1: none), shapes number of the block after
# them) -> shapes number of the first stage through that block
_SHAPE_STEPS: dict[tuple[int, int], int] = {}


def _first_stage_of(cfg: TinyCnnConfig) -> _FirstStage:
    """See :func:`_first_stage`."""
    depth = cfg.depths[0]
    return _first_stage(
        cfg.width_mult, cfg.in_channels, cfg.rank_ratio, cfg.kernel_sizes[:depth],
        cfg.expand_ratios[:depth], (cfg.stem_stride, cfg.first_stage_stride),
        cfg.fused_stages > 0,
    )  # fmt: skip


@functools.lru_cache(maxsize=16384)
def _first_stage(
    width: float, channels: int, rank: float, kernels: tuple[int, ...],
    expands: tuple[int, ...], strides: tuple[int, int], fused: bool,
) -> _FirstStage:  # fmt: skip
    """The layers of a two-stage patched piece, by what shapes them."""
    # (the stem and first block do not depend on the kernel and expand ratio)
    stem = _stage_blocks(width, channels, rank, 3, 2, strides, fused)[0]
    layers, numbers = stem.layers, stem.numbers
    shapes_id = _shapes_step(-1, stem)
    for block, (kernel, expand) in enumerate(zip(kernels, expands, strict=True)):
        part = _stage_blocks(width, channels, rank, kernel, expand, strides, fused)[1 + block]
        shapes_id = _shapes_step(shapes_id, part)
        layers += part.layers
        numbers += part.numbers
    return _FirstStage(layers, _SHAPES[shapes_id], np.array(numbers, np.int64), shapes_id)


def _shapes_step(before: int, block: _BlockLayers) -> int:
    """The shapes number of the layers numbered ``before`` (-1: none) and then ``block``'s."""
    shapes_id = _SHAPE_STEPS.get((before, block.shapes_number))
    if shapes_id is None:
        shapes = _SHAPES[before] if before >= 0 else ()
        offset = len(shapes)
        shapes += tuple(
            (kernel, stride, source + offset if source >= 0 else -1)
            for kernel, stride, source in block.shapes
        )
        shapes_id = _SHAPE_IDS.get(shapes)
        if shapes_id is None:
            shapes_id = _SHAPE_IDS[shapes] = len(_SHAPES)
            _SHAPES.append(shapes)
            columns = np.array(shapes, np.int64).T.copy()
            _SHAPE_ARRAYS.append((columns[0], columns[1], columns[2]))
        _SHAPE_STEPS[(before, block.shapes_number)] = shapes_id
    return shapes_id


def _assembled_patched(cfg: TinyCnnConfig, config: RuntimeConfig) -> _Bundle:
    """The bundle of a piece patched over two stages from its patches' layers, each cached
    on its own (far fewer kinds than whole patched pieces). The converter merges identical
    ops: a patch whose first layers run on the same region as an earlier patch's (same
    slice, same zeros) reuses that patch's tensors up to where they part."""
    res, channels = cfg.resolution, cfg.in_channels
    layers, shapes, _, _ = _first_stage_of(cfg)
    axis = _patch_axis(res, cfg.patch_grid, tuple((k, s) for k, s, _ in shapes))
    skip_of = {  # residual layer -> the layer whose input it adds
        i: source for i, (_, _, source) in enumerate(shapes) if source >= 0
    }
    image = (1, res, res, channels)
    whole = (0, res)
    sizes: list[int] = []
    lasts: list[int] = []
    scratch: list[int] = []
    scratch_scopes: list[int] = []
    runs: list[RunTerms] = []
    merged: dict[int, int] = {}
    shared: dict[int, int] = {}
    tensors = flash = layouts = entry_last = base = 0
    first_opcode = ""
    # (input tensor, layer, zeros) -> its output, (region,) -> its slice: indices in sizes
    made: dict[tuple, int] = {}
    outputs = []  # index of each patch's output in sizes
    shapes = []

    def add(unit: _Unit, inputs: tuple[int, ...]) -> int:
        nonlocal tensors, flash, entry_last, base, first_opcode
        for index, last in zip(inputs, unit.entry_lasts, strict=True):
            if index < 0:
                entry_last = max(entry_last, base + last)
            else:
                lasts[index] = max(lasts[index], base + last)
        sizes.extend(unit.sizes)
        lasts.extend([base + last if last else 0 for last in unit.lasts])
        scratch.extend(unit.scratch)
        scratch_scopes.extend([base + scope for scope in unit.scratch_scopes])
        runs.append(unit.run)
        tensors += unit.tensors
        flash += unit.flash
        first_opcode = first_opcode or unit.first_opcode
        shared.update(unit.shared)
        base += unit.ops
        return len(sizes) - 1

    def count_constants(unit: _Unit) -> None:
        # Even when the op that made it is merged away (its tables then have the layouts of
        # the op it is merged into).
        nonlocal layouts
        merged.update(unit.merged)
        layouts |= unit.layouts

    grid = len(axis)
    for p in range(grid * grid):
        row_steps, col_steps = axis[p // grid], axis[p % grid]
        if row_steps[0][0] == whole and col_steps[0][0] == whole:
            x = -1  # the image
        else:
            region = (*row_steps[0][0], *col_steps[0][0])
            slice_unit = _unit(region, image, None, config)
            count_constants(slice_unit)
            x = made.get((region,), -2)
            if x == -2:
                x = made[(region,)] = add(slice_unit, (-1,))
        inputs = [x]  # the input of each layer
        for i, (layer, row, col) in enumerate(zip(layers, row_steps, col_steps, strict=True)):
            (ry0, ry1), pads_y, (oy0, oy1) = row
            (rx0, rx1), pads_x, (ox0, ox1) = col
            pads = (*pads_y, *pads_x)
            if i in skip_of:
                (sy0, sy1), _, _ = row_steps[skip_of[i]]
                (sx0, sx1), _, _ = col_steps[skip_of[i]]
                unit_step = (layer.key[0], (0, 0, 0, 0), pads,
                             (oy0 - sy0, oy1 - sy0, ox0 - sx0, ox1 - sx0))  # fmt: skip
                skip_shape = (1, sy1 - sy0, sx1 - sx0, layers[skip_of[i]].channels)
                unit_inputs = (x, inputs[skip_of[i]])
            else:
                unit_step = (layer.key[0], (0, 0, 0, 0), pads, (0, oy1 - oy0, 0, ox1 - ox0))
                skip_shape = None
                unit_inputs = (x,)
            in_shape = (1, ry1 - ry0, rx1 - rx0, layer.channels)
            unit = _unit((layer.key, unit_step), in_shape, skip_shape, config)
            count_constants(unit)
            # Same input and zeros: the same op, merged by the converter.
            path = (x, i, pads)
            x = made.get(path, -2)
            if x == -2:
                x = made[path] = add(unit, unit_inputs)
            inputs.append(x)
        outputs.append(x)
        (y0, y1), (x0, x1) = row_steps[-1][2], col_steps[-1][2]
        shapes.append((1, y1 - y0, x1 - x0, layers[-1].key[3][2]))
    ops, tail, concat_flash, concat_layouts = _concats(tuple(shapes), grid, config)
    alignment = config.alignment
    rows: list[int] = []
    for i, op in enumerate(ops):
        for index in outputs[i * grid : (i + 1) * grid] if i < grid else rows:
            lasts[index] = base + i + 1
        sizes.append(-(-op.output.nbytes // alignment) * alignment)
        lasts.append(0)
        rows.append(len(sizes) - 1)
    scratch += tail.scratch
    scratch_scopes += [base + scope for scope in tail.scratch_scopes]
    runs.append(run_terms(tail))
    tensors += len(ops)
    flash += concat_flash
    layouts |= concat_layouts
    plan_part = plan_piece(
        len(sizes), entry_last, sizes, lasts, scratch, scratch_scopes, transient=True
    )
    return _Bundle(
        tensors, len(sizes) + len(scratch), flash, layouts, first_opcode or ops[0].opcode,
        tuple(merged.items()), tuple(shared.items()), plan_part, compose_runs(runs, config),
    )  # fmt: skip


class _PatchGeometry(NamedTuple):
    """The grid of a patched part, as the compiled assembly reads it (see _patched_kernel)."""

    axis: np.ndarray  # (position, layer): input range, zeros before and after, output range
    flags: np.ndarray  # (position, layer): bit 0 zeros, 1 zeros == SAME, 2 skip cropped
    skip_of: np.ndarray  # per layer: the layer whose input its residual adds, or -1
    usage: np.ndarray  # (layer, variant, i, j): each variant used, at its first use
    sliced: tuple[int, int] | None  # a patch (i, j) reading part of the image, if any
    out_hw: tuple[tuple[int, int], ...]  # each patch's output
    concats: dict[tuple[int, RuntimeConfig], tuple]  # (channels, runtime) -> _concat_terms
    # what the compiled assembly reads of it: axis, flags, skip_of, usage, then the int32
    # constants merged by value (see _geometric_constants)
    arguments: tuple


@functools.lru_cache(maxsize=4096)
def _patch_geometry(resolution: int, grid: int, shapes_id: int) -> _PatchGeometry:
    """The grid of a patched part whose layers have these shapes (see _FirstStage), worked
    out in compiled code (see _patched_kernel._grid_geometry)."""
    kernels, strides, sources = _SHAPE_ARRAYS[shapes_id]
    size, axis, flags, usage, codes = _patched_kernel.geometry()(
        resolution, grid, kernels, strides, sources
    )
    if size < grid:
        raise _grid_too_fine(grid, size)
    # The first patch (row-major) that reads part of the image, if any.
    spans = (axis[:, 0, 1] - axis[:, 0, 0]).tolist()
    cut = [position for position, span in enumerate(spans) if span != resolution]
    sizes = (axis[:, -1, 5] - axis[:, -1, 4]).tolist()
    return _PatchGeometry(
        axis, flags, sources, usage, (0, cut[0]) if cut else None,
        tuple((height, width) for height in sizes for width in sizes), {},
        (axis, flags, sources, usage, *_geometric_constants(codes)),
    )  # fmt: skip


class _Templates:
    """The templates of one runtime: the kernel's store, and what Python checks of them."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.store = _patched_kernel.TemplateStore(config.pointer_bytes, _FLASH_COLUMNS)
        self.slices: dict[int, int] = {}  # input channels -> the image slice's template
        self.layer_flash: dict[int, list[int]] = {}  # layer number -> its own constants
        self.opcodes = np.zeros(64, np.int64)  # each template's first opcode (_OPCODE_INDEX)
        self.runtime = (config.alignment, _fixed(config).request)

    @property
    def arguments(self) -> tuple:
        """What the compiled assembly reads of the runtime and the store (see _assembly)."""
        return self.runtime + self.store.arrays


def _is_public(key: tuple) -> bool:
    """Whether a constant shared by value may also be in another piece of the graph: a
    zero-point vector or int32 zeros (a zero bias, a slice's begin at the corner). The rest
    of a patched piece's constants (its layers' weights, biases and scales, its slice bounds
    and paddings) are its own: no other piece holds them."""
    return key[0] == "zero_points" or (key[0] == "int32 data" and not any(key[1]))


_TEMPLATES: dict[RuntimeConfig, _Templates] = {}


def _template(
    templates: _Templates,
    config: RuntimeConfig,
    key: tuple,
    in_shape: tuple[int, ...],
    skip_shape: tuple[int, ...] | None,
    layer: int | None,
) -> int:
    """A new template, from one patch's layer (number ``layer``) or the image slice built
    on its own; UNUSABLE (kept as its id) for one the compiled assembly cannot add up."""
    part = _unit_piece(key, in_shape, skip_shape, by_value=False)
    tail = summarize([op_profile(k, config) for k in part.keys], config)
    ops = [
        (
            _patched_kernel.PADDED_DIMS if op[0] == "PAD" else _patched_kernel.OUT_DIMS,
            op[2][0][3],
            last,
        )
        for op, last in zip(part.keys, part.lasts, strict=True)
    ]
    layouts = _layout_bits(part.layouts)
    if layouts >> 62 or any(_is_public(key) for key, _ in part.merged):
        return _patched_kernel.UNUSABLE
    own = sum(flash for _, flash in part.merged) + sum(
        flash for key, flash in part.shared if not _is_public(key)
    )
    layer_flash = [len(part.merged), *_columns(own)]
    if layer is not None:  # every variant of a layer holds the same constants
        if templates.layer_flash.setdefault(layer, layer_flash) != layer_flash:
            return _patched_kernel.UNUSABLE
    elif any(layer_flash):
        return _patched_kernel.UNUSABLE
    # Shared entries other pieces may hold too (zero points, zero biases): their keys
    # (2 * key number + 1) and flash columns (see _combine).
    public = [
        (2 * _key_number(key) + 1, _columns(flash)[:3])
        for key, flash in part.shared
        if _is_public(key)
    ]
    template = templates.store.add(
        part.entry_lasts, part.tensors, ops,
        list(zip(tail.scratch, tail.scratch_scopes, strict=True)), run_terms(tail), layouts,
        _columns(part.flash), layer_flash, public, part.first_opcode,
    )  # fmt: skip
    templates.opcodes = _patched_kernel.grown(templates.opcodes, template + 1)
    templates.opcodes[template] = _OPCODE_INDEX[part.first_opcode]
    return template


# int32 constant code -> (flash of the constant and of its data unless other pieces may hold
# it too, (key, flash columns) of data other pieces may hold too: see _geometric_constants)
_CODE_TERMS: dict[int, tuple[int, tuple[tuple[int, list[int]], ...]]] = {}


def _code_terms(code: int) -> tuple[int, tuple[tuple[int, list[int]], ...]]:
    """:data:`_CODE_TERMS` of an int32 constant by its code (see
    ``_patched_kernel.CODE_SHIFT``), as ``GraphBuilder.index_constant`` makes it."""
    kind = code >> _patched_kernel.CODE_SHIFT
    digits = [(code >> (8 * i)) & 255 for i in range(4)]
    if kind == _patched_kernel.BEGIN_END:
        shape, values = (4,), (0, digits[0], digits[1], 0)
    elif kind == _patched_kernel.STRIDES:
        shape, values = (4,), (1, 1, 1, 1)
    else:
        shape, values = (4, 2), (0, 0, *digits, 0, 0)
    tensor = GraphBuilder().index_constant(values, shape)
    flash, public = _pack(tensor_terms(tensor)), []
    for key, part in shared_terms(tensor):
        if _is_public(key):
            public.append((2 * _key_number(key) + 1, _columns(_pack(part))[:3]))
        else:
            flash += _pack(part)
    terms = _CODE_TERMS[code] = (flash, tuple(public))
    return terms


def _add_templates(
    layers: tuple[_PatchLayer, ...], geometry: _PatchGeometry, templates: _Templates,
    config: RuntimeConfig,
) -> None:
    """Make the templates the grid needs and has not got, each from the first patch that
    uses it."""
    axis, store = geometry.axis, templates.store
    for index, variant, i, j in geometry.usage.tolist():
        layer = layers[index]
        if layer.number < len(store.table) and store.table[layer.number, variant] != (
            _patched_kernel.UNKNOWN
        ):
            continue
        ry0, ry1, top, bottom, oy0, oy1 = axis[i, index].tolist()
        rx0, rx1, left, right, ox0, ox1 = axis[j, index].tolist()
        source = int(geometry.skip_of[index])
        if source >= 0:
            sy0, sy1 = axis[i, source, :2].tolist()
            sx0, sx1 = axis[j, source, :2].tolist()
            step = (layer.key[0], (0, 0, 0, 0), (top, bottom, left, right),
                    (oy0 - sy0, oy1 - sy0, ox0 - sx0, ox1 - sx0))  # fmt: skip
            skip_shape = (1, sy1 - sy0, sx1 - sx0, layers[source].channels)
        else:
            step = (layer.key[0], (0, 0, 0, 0), (top, bottom, left, right),
                    (0, oy1 - oy0, 0, ox1 - ox0))  # fmt: skip
            skip_shape = None
        in_shape = (1, ry1 - ry0, rx1 - rx0, layer.channels)
        template = _template(
            templates, config, (layer.key, step), in_shape, skip_shape, layer.number
        )
        store.set_template(layer.number, variant, template)


def _slice_template(
    cfg: TinyCnnConfig, config: RuntimeConfig, geometry: _PatchGeometry, templates: _Templates
) -> int:
    """The template of the image slice a patch reads (-1: every patch reads all the image;
    UNUSABLE: one the compiled assembly cannot add up)."""
    if geometry.sliced is None:
        return -1
    template = templates.slices.get(cfg.in_channels)
    if template is None:
        i, j = geometry.sliced
        axis = geometry.axis
        region = (*axis[i, 0, :2].tolist(), *axis[j, 0, :2].tolist())
        image = (1, cfg.resolution, cfg.resolution, cfg.in_channels)
        template = templates.slices[cfg.in_channels] = _template(
            templates, config, region, image, None, None
        )
    return template


class _PatchedParts(NamedTuple):
    """A two-stage patched piece as the compiled combination reads it (see
    _combine.BundleTable.add: one row's info, drops and flash; its keys with their flash as
    rows; its planner columns (4, n))."""

    info: np.ndarray
    drops: np.ndarray
    flash: np.ndarray
    keys: np.ndarray
    key_flash: np.ndarray
    columns: np.ndarray
    first_opcode: str


def _kernel_patched(cfg: TinyCnnConfig, config: RuntimeConfig) -> _Bundle | None:
    """:func:`_assembled_patched`'s bundle, assembled in compiled code from templates (None
    when the compiled assembly is unavailable or the part has scratch buffers). The
    piece's own constants are added up in its tensors and flash; only the constants other
    pieces may hold too are left by key."""
    parts = _kernel_patched_parts(cfg, config)
    return None if parts is None else _parts_bundle(parts)


def _parts_bundle(parts: _PatchedParts) -> _Bundle:
    """The bundle of a patched piece given as its compiled assembly's arrays."""
    tensors, requests, layouts, ops, *fold = parts.info.tolist()
    shared = {
        key >> 1: _packed(flash)
        for key, flash in zip(parts.keys.tolist(), parts.key_flash.tolist(), strict=True)
    }
    return _Bundle(
        tensors, requests, _packed(parts.flash.tolist()), layouts, parts.first_opcode, (),
        shared, FlatPiece(parts.columns), (tuple(parts.drops.tolist()), ops, *fold),
    )  # fmt: skip


def _kernel_patched_parts(cfg: TinyCnnConfig, config: RuntimeConfig) -> _PatchedParts | None:
    """See :func:`_kernel_patched`."""
    kernel = _patched_kernel.kernel()
    if kernel is None:
        return None
    assembled = _assembly(cfg, config, lambda arguments, *_: kernel(*arguments))
    if assembled is None:
        return None
    templates, concat_opcode, (_, first, columns, info, dropped, flash, keys, key_flash) = (
        assembled
    )
    first_opcode = templates.store.first_opcodes[first] if first >= 0 else concat_opcode
    return _PatchedParts(info, dropped, flash, keys, key_flash, columns, first_opcode)


def _assembly(
    cfg: TinyCnnConfig, config: RuntimeConfig, call: Callable[[tuple, _Templates, str], Sequence]
) -> tuple[_Templates, str, Sequence] | None:
    """(templates, the CONCATENATIONs' opcode, what ``call`` returned) once ``call`` has
    been given the compiled assembly's arguments for ``cfg`` (see
    ``_patched_kernel._assemble``), the runtime's templates and the CONCATENATIONs' opcode
    and has not answered (its result's first item) that a template the grid uses is
    missing; None when the compiled assembly cannot add up ``cfg``'s patched part."""
    layers, _, numbers, shapes_id = _first_stage_of(cfg)
    geometry = _patch_geometry(cfg.resolution, cfg.patch_grid, shapes_id)
    templates = _TEMPLATES.get(config)
    if templates is None:
        templates = _TEMPLATES[config] = _Templates(config)
    slice_id = _slice_template(cfg, config, geometry, templates)
    out_channels = layers[-1].key[3][2]
    concats = geometry.concats.get((out_channels, config))
    if concats is None:
        concats = geometry.concats[(out_channels, config)] = _concat_terms(
            tuple((1, h, w, out_channels) for h, w in geometry.out_hw), cfg.patch_grid, config
        )
    concat_run, concat_opcode = concats[1], concats[4]
    if slice_id == _patched_kernel.UNUSABLE or concat_run is None or templates.store.scratch_count:
        return None
    own = (numbers, slice_id, cfg.resolution, out_channels, *concats[:4])
    for _ in range(2):  # at most: templates missing, then done
        arguments = geometry.arguments + own + templates.arguments
        result = call(arguments, templates, concat_opcode)
        if result[0] == _patched_kernel.UNKNOWN:
            _add_templates(layers, geometry, templates, config)
        elif result[0] == _patched_kernel.UNUSABLE:
            return None
        else:
            return templates, concat_opcode, result
    raise AssertionError("the patched assembly did not settle")


def _geometric_constants(codes: np.ndarray) -> tuple:
    """(tensors, flash columns) of the int32 constants a patched part merges by value (their
    ``codes``, as its patches use them), and the keys (2 * key number + 1) and flash of their
    data other pieces may hold too (a slice's begin of zeros). Each distinct code is one
    tensor and one buffer (distinct values; a merged op's constants are those of the op it is
    merged into)."""
    distinct = set(codes.tolist())
    flash = 0
    public: list[tuple[int, list[int]]] = []
    for code in distinct:
        terms = _CODE_TERMS.get(code) or _code_terms(code)
        flash += terms[0]
        public += terms[1]
    return (
        len(distinct), np.array(_columns(flash), np.int64),
        np.array([key for key, _ in public], np.int64),
        np.array([columns for _, columns in public], np.int64).reshape(-1, 3),
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _concat_terms(
    shapes: tuple[tuple[int, ...], ...], grid: int, config: RuntimeConfig
) -> tuple[int, np.ndarray | None, int, int, str]:
    """(ops, run terms as the compiled assembly reads them (None: scratch buffers, which it
    does not place), flash columns, layouts, first opcode) of a patched part's
    CONCATENATIONs."""
    ops, tail, flash, layouts = _concats(shapes, grid, config)
    drops, *fold = run_terms(tail)
    run = None if tail.scratch else np.array([*fold, *drops], np.int64)
    return len(ops), run, np.array(_columns(flash), np.int64), layouts, ops[0].opcode


@functools.lru_cache(maxsize=64)
def _input_terms(
    resolution: int, channels: int, alignment: int
) -> tuple[int, np.ndarray, int, int]:
    """The model input's arena bytes (aligned), flash (as columns, see _columns; also
    packed) and layout bits."""
    terms = tensor_terms(Tensor((1, resolution, resolution, channels), name=INPUT_NAME))
    columns = _columns(_pack(terms))
    aligned = -(-resolution * resolution * channels // alignment) * alignment
    return aligned, np.array(columns, np.int64), _packed(columns), _layout_bits(terms.layouts)


def _patched_bundle(cfg: TinyCnnConfig, config: RuntimeConfig, flat: bool) -> _Bundle:
    """A two-stage patched piece's bundle: compiled for the flat planner if possible."""
    return (flat and _kernel_patched(cfg, config)) or _assembled_patched(cfg, config)


class _Rows:
    """The bundle table of one runtime (see _combine) and each fast key's row in it."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.table = _combine.BundleTable(config.pointer_bytes, _FLASH_COLUMNS)
        self.rows: dict[object, int] = {}
        self.index = _combine.RowIndex(_MAX_BUNDLES)  # the tiny-cnn blocks' and heads' rows
        fixed = _fixed(config)
        self.fixed = _combine.fixed_terms(
            fixed, config.alignment, _MAX_SCRATCH_BUFFERS_PER_OP, _PLANNER_BYTES_PER_BUFFER
        )
        # arena_from_terms's arithmetic holds for alignments that are multiples of this
        self.supported = not config.alignment % fixed.modulus

    def add(self, key: object, row: tuple) -> None:
        """A new row (see _row_arrays) for the piece ``key``."""
        number = self.rows[key] = self.table.add(*row)
        if isinstance(key, int):
            self.index.add(key, number)
        elif key[0] == "head":  # type: ignore[index]
            self.index.add(_combine.head_key(*key[1:]), number)  # type: ignore[index]


_ROWS: dict[RuntimeConfig, _Rows] = {}


def _row_arrays(bundle: _Bundle) -> tuple | None:
    """A bundle as a table row (see _combine.BundleTable.add), or None if it holds more
    than 62 kinds of tables or a counted-once constant with operators."""
    drops, ops, op_data, first_op_data, peak, persist, scratch = bundle.run
    if bundle.layouts >> 62:
        return None
    keys = []
    for kind, pairs in enumerate((bundle.merged, bundle.shared)):
        for number, packed in dict(pairs).items():
            columns = _columns(packed)
            if any(columns[3:]):
                return None
            keys.append((number, kind, columns[:3]))
    info = (
        bundle.tensors, bundle.requests, bundle.layouts, ops, op_data, first_op_data, peak,
        persist, scratch,
    )  # fmt: skip
    return info, drops, _columns(bundle.flash), keys, bundle.plan.columns, bundle.first_opcode


_NO_FIRST = (
    np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
    np.empty(0, np.int64), np.empty((0, 3), np.int64), np.empty((4, 0), np.int64),
)  # fmt: skip


def _add_rows(
    cfg: TinyCnnConfig | TinyVitConfig, config: RuntimeConfig, state: _Rows, keys: list,
    later_only: bool,
) -> bool:  # fmt: skip
    """Add the rows ``cfg``'s pieces ``keys`` (``later_only``: all but a two-stage patched
    piece) do not have yet; False if one cannot be a row."""
    bundles = _bundles(cfg, config, True, later_only)
    for key, bundle in zip(keys, bundles, strict=True):
        if key not in state.rows:
            row = _row_arrays(bundle)
            if row is None:
                return False
            state.add(key, row)
    return True


def _compiled_figures(
    cfg: TinyCnnConfig | TinyVitConfig, config: RuntimeConfig, combine: Callable
) -> tuple[ArenaFigures, int] | None:
    """:func:`fast_figures` with the pieces added up and planned in one compiled call (None:
    not for this config, the caller adds them up in Python)."""
    state = _ROWS.get(config)
    if state is None or len(state.rows) > _MAX_BUNDLES:
        state = _ROWS[config] = _Rows(config)
    if not state.supported:
        return None
    first = parts = None
    two_stage = (
        isinstance(cfg, TinyCnnConfig) and cfg.patch_grid > 1 and cfg.patch_stages == 2
    )
    if isinstance(cfg, TinyCnnConfig):  # the common case: one compiled call
        find = _fused_figures if two_stage else _found_figures
        figures = find(cfg, config, state)
        if figures is not None:
            return figures
    keys = _vit_keys(cfg) if isinstance(cfg, TinyVitConfig) else _cnn_keys(cfg)
    rows = state.rows
    if two_stage:
        keys = keys[1:]
        if not all(key in rows for key in keys):
            # The later pieces' rows (the compiled call assembles the patched piece itself),
            # then the one call again.
            if not _add_rows(cfg, config, state, keys, later_only=True):
                return None
            figures = _fused_figures(cfg, config, state)  # type: ignore[arg-type]
            if figures is not None:
                return figures
        parts = _kernel_patched_parts(cfg, config)  # type: ignore[arg-type]
        if parts is None:
            first = _assembled_patched(cfg, config)  # type: ignore[arg-type]
    try:
        chain = [rows[key] for key in keys]
    except KeyError:  # (a two-stage config's rows were added above)
        if not _add_rows(cfg, config, state, keys, later_only=False):
            return None
        chain = [rows[key] for key in keys]
    if parts is not None:
        first_arrays = parts[:6]
        first_opcode = parts.first_opcode
    elif first is None:
        first_arrays = _NO_FIRST
        first_opcode = state.table.first_opcodes[chain[0]]
    else:
        row = _row_arrays(first)
        if row is None:
            return None
        info, drops, flash, first_keys, columns, first_opcode = row
        first_arrays = (
            np.array(info, np.int64), np.array(drops, np.int64), np.array(flash, np.int64),
            np.array([2 * number + kind for number, kind, _ in first_keys], np.int64),
            np.array([key[2] for key in first_keys], np.int64).reshape(-1, 3), columns,
        )  # fmt: skip
    input_bytes, input_flash, _, input_layouts = _input_terms(
        cfg.resolution, cfg.in_channels, config.alignment
    )
    out = combine(
        np.array(chain, np.int64), *state.table.arrays, *first_arrays, input_bytes,
        input_flash, state.fixed, _OPERATOR_BYTES, _OPCODE_INDEX[first_opcode],
    )  # fmt: skip
    return _combined_figures(out.tolist(), input_layouts, first_opcode)


def _combined_figures(
    out: list[int], input_layouts: int, first_opcode: str
) -> tuple[ArenaFigures, int] | None:
    """(arena figures, flash bytes) from the compiled combination's result (see
    _combine._combine; None: the model has no OpData, the Python path raises for it)."""
    arena, head, tail, tensors, layouts, ops, operators, mask, *columns = out
    if arena < 0:
        return None
    flash = _file_size(
        columns, ops, operators, mask, layouts | input_layouts, first_opcode, tensors
    )
    return ArenaFigures(arena, head, tail), flash


def _fused_figures(
    cfg: TinyCnnConfig, config: RuntimeConfig, state: _Rows
) -> tuple[ArenaFigures, int] | None:
    """:func:`_compiled_figures` of a two-stage patched config in one compiled call: the rows
    of its later pieces found, its patched part assembled, the whole combined (None: not for
    this config, or a later piece has no row yet)."""
    fused = _combine.patched_kernel()
    later = _later(cfg, 1, state)
    if fused is None or later is None:
        return None
    input_bytes, input_flash, _, input_layouts = _input_terms(
        cfg.resolution, cfg.in_channels, config.alignment
    )
    assembled = _assembly(cfg, config, lambda arguments, templates, concat_opcode: fused(
        later, arguments, templates.opcodes, _OPCODE_INDEX[concat_opcode], state.table.arrays,
        input_bytes, input_flash, state.fixed, _OPERATOR_BYTES,
    ))  # fmt: skip
    if assembled is None:
        return None
    status, first_opcode, *out = assembled[2].tolist()
    if status != _patched_kernel.ASSEMBLED:
        return None
    return _combined_figures(out, input_layouts, _OPCODE_NAMES[first_opcode])


def _later(cfg: TinyCnnConfig, first_stage: int, state: _Rows) -> tuple | None:
    """_combine._later_rows's arguments for ``cfg``'s pieces from stage ``first_stage`` on
    (None before _cnn_keys has met its width, rank ratio and fused stages, or for a
    resolution its keys cannot hold: the Python path then works them out, or raises)."""
    fields = _BLOCK_FIELDS.get((cfg.width_mult, cfg.rank_ratio, cfg.fused_stages))
    if fields is None or cfg.resolution >= _FIELD_LIMIT:
        return None
    return (
        first_stage, cfg.resolution, (cfg.stem_stride, cfg.first_stage_stride),
        cfg.num_classes, cfg.fused_stages, cfg.depths, cfg.kernel_sizes, cfg.expand_ratios,
        fields[1], state.index.keys, state.index.rows,
    )  # fmt: skip


def _found_figures(
    cfg: TinyCnnConfig, config: RuntimeConfig, state: _Rows
) -> tuple[ArenaFigures, int] | None:
    """:func:`_compiled_figures` of a whole-image or one-stage patched config in one compiled
    call that finds the rows of its pieces after the first (None: not for this config, or a
    piece has no row yet)."""
    found = _combine.found_kernel()
    later = _later(cfg, 0, state)
    first_row = state.rows.get(_first_key(cfg))
    if found is None or later is None or first_row is None:
        return None
    first_opcode = state.table.first_opcodes[first_row]
    input_bytes, input_flash, _, input_layouts = _input_terms(
        cfg.resolution, cfg.in_channels, config.alignment
    )
    out = found(
        first_row, later, state.table.arrays, input_bytes, input_flash, state.fixed,
        _OPERATOR_BYTES, _OPCODE_INDEX[first_opcode],
    ).tolist()  # fmt: skip
    if out[0] != 0:
        return None
    return _combined_figures(out[1:], input_layouts, first_opcode)


_FLAT_AFTER = 200  # configs estimated before compiled code takes over
_estimates = 0


def fast_figures(cfg: SpaceConfig, config: RuntimeConfig) -> tuple[ArenaFigures, int]:
    """(arena figures, flash bytes) of ``cfg``, equal to the whole-graph synthesis's."""
    # Compiled code costs ~1.5 s to load (~10 s to compile once per installation): worth it
    # in a search only. It then plans tiny-cnn's and tiny-vit's chains flat and adds up their
    # pieces (see _combine). tiny-resnet keeps the memoising chain planner: its few kinds
    # of pieces repeat.
    global _estimates
    _estimates += 1
    flat = (
        isinstance(cfg, TinyCnnConfig | TinyVitConfig) and _estimates > _FLAT_AFTER and compiled()
    )
    if flat:
        combine = _combine.kernel()
        figures = None if combine is None else _compiled_figures(cfg, config, combine)  # type: ignore[arg-type]
        if figures is not None:
            return figures
    bundles = _bundles(cfg, config, flat)
    tensor_count = request_count = 1  # the input
    input_bytes, _, flash, layouts = _input_terms(
        cfg.resolution, cfg.in_channels, config.alignment
    )
    merged: dict[int, int] = {}
    shared: dict[int, int] = {}
    plans = []
    runs = []
    for tensors, requests, piece_flash, piece_layouts, _, merges, shares, plan, run in bundles:
        tensor_count += tensors
        request_count += requests
        flash += piece_flash
        layouts |= piece_layouts
        if merges:
            merged.update(merges)
        if shares:
            shared.update(shares)
        plans.append(plan)
        runs.append(run)
    tensor_count += len(merged)
    flash += sum(merged.values()) + sum(shared.values())
    if flat:
        high_water = flat_high_water(plans, input_bytes)
    else:
        high_water = chain_high_water(plans, input_bytes)
    figures = arena_from_terms(runs, high_water, request_count, tensor_count, config)
    flash_bytes = _flash_from_columns(
        _columns(flash), layouts, bundles[0].first_opcode, tensor_count
    )
    return figures, flash_bytes
