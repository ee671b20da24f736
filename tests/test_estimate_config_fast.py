"""The config-based memory model's fast path: exactly the full synthesis, however it is cached."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from edgekit.errors import ConfigError
from edgekit.estimate import _combine, _config_fast, _flat_plan, _patched_kernel, from_config
from edgekit.estimate._config_arena import _aligned_part, _smallest_fit
from edgekit.estimate._config_plan import chain_high_water, plan_piece
from edgekit.estimate._config_spaces import pieces_of
from edgekit.estimate.from_config import estimate_config, estimate_config_bytes
from edgekit.estimate.planner import BufferRequest, plan_greedy
from edgekit.spaces import get_space

torch.set_num_threads(1)


def _family_configs(count: int, seed: int) -> list:
    """Random configs, the same number from each family: tiny-cnn whole-image, patched over
    one stage, patched over two stages, tiny-resnet, tiny-vit (random classes and input
    channels)."""
    rng = random.Random(seed)
    families = {
        "whole-image": lambda c: c.patch_grid == 1,
        "patched 1 stage": lambda c: c.patch_grid > 1 and c.patch_stages == 1,
        "patched 2 stages": lambda c: c.patch_grid > 1 and c.patch_stages == 2,
        "tiny-resnet": lambda c: True,
        "tiny-vit": lambda c: True,
    }
    configs = []
    for family, keep in families.items():
        space_name = family if family.startswith("tiny-") else "tiny-cnn"
        found = 0
        while found < count:
            space = get_space(space_name, rng.choice([2, 10]), rng.choice([1, 3]))
            cfg = space.sample(rng)
            try:
                estimate_config_bytes(cfg)
            except ConfigError:  # a patch grid larger than the patched output
                continue
            if keep(cfg):
                configs.append(cfg)
                found += 1
    return configs


@pytest.fixture(params=["chain planner", "compiled flat planner"])
def planner(request, monkeypatch):
    """tiny-cnn and tiny-vit chains planned by the memoising chain planner, or (as in a
    search, after a few hundred configs) by the compiled flat planner."""
    flat = request.param == "compiled flat planner"
    if flat and not _flat_plan.compiled():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_config_fast, "_FLAT_AFTER", -1 if flat else 10**9)
    from_config.clear_estimates()
    yield request.param
    from_config.clear_estimates()


def _full(cfg, pointer_bytes: int) -> tuple[int, int]:
    estimate = estimate_config(cfg, pointer_bytes=pointer_bytes)
    return estimate.arena_bytes, estimate.flash_bytes


@pytest.mark.parametrize("pointer_bytes", [4, 8])
def test_fast_path_equals_the_full_synthesis_in_every_family(pointer_bytes, planner):
    for cfg in _family_configs(3, seed=10 + pointer_bytes):
        assert estimate_config_bytes(cfg, pointer_bytes) == _full(cfg, pointer_bytes), cfg


def test_configs_sharing_cached_pieces_are_still_exact():
    """Knobs left out of a piece's key (a one-stage patched piece ignores the rank ratio and
    every later block) must not change that piece: neighbours of one config, each checked
    against the full synthesis after the others filled the caches."""
    space = get_space("tiny-cnn", 10, 3)
    base = space.decode("r32-w0.5-rk0.5-p2s1-k35.3.57.3-e62.4.34.2")
    variants = [
        base,
        dataclasses.replace(base, rank_ratio=1.0),
        dataclasses.replace(base, rank_ratio=0.75, num_classes=2),
        dataclasses.replace(base, patch_stages=2),
        dataclasses.replace(base, patch_stages=2, rank_ratio=1.0),
        dataclasses.replace(base, patch_grid=1),
        dataclasses.replace(base, patch_grid=1, in_channels=1),
    ]
    for cfg in variants:
        estimate_config_bytes(cfg)
    for cfg in variants:
        assert estimate_config_bytes(cfg) == _full(cfg, 4), cfg


def test_patches_sharing_their_first_layers_are_exact(planner):
    """Two-stage patched configs are assembled from per-patch layers; patches whose first
    layers run on the same region share those ops in the converted graph (the converter
    merges them), with and without such sharing, for both pointer widths."""
    space = get_space("tiny-cnn", 10, 3)
    genomes = [
        "r24-w0.5-rk1-p2s2-k757.5.3.75-e644.6.2.64",  # patches share up to 7 layers
        "r28-w0.35-rk1-p4s2-k775.537.57.7-e444.332.23.3",  # share a (clipped) slice
        "r32-w0.75-rk0.5-p3s2-k3.5.37.7-e6.2.43.4",  # low rank, one block
        "r40-w0.35-rk0.75-p2s2-k333.5.3.7-e222.6.3.4",
    ]
    for genome in genomes:
        for channels in (1, 3):
            cfg = dataclasses.replace(space.decode(genome), in_channels=channels)
            for pointer_bytes in (4, 8):
                assert estimate_config_bytes(cfg, pointer_bytes) == _full(cfg, pointer_bytes), (
                    genome, channels, pointer_bytes,
                )  # fmt: skip


def _bisection(most: int, pointer: int, alignment: int, before: int, low: int) -> int:
    """TFLM's ``minimum_arena`` search (double, then bisect) over ``fits``, step for step."""

    def fits(arena: int) -> bool:
        residue = arena % alignment
        used_before = residue - _aligned_part(residue, pointer, alignment, before)
        return arena >= used_before + most

    step = alignment
    high = low + step
    while not fits(high):
        low, step = high, step * 2
        high = low + step
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize(("pointer", "alignment"), [(4, 16), (8, 16), (4, 32), (8, 64)])
def test_smallest_fitting_arena_is_what_the_search_finds(pointer, alignment):
    rng = random.Random(pointer * alignment)
    for _ in range(2000):
        most, before = rng.randrange(1, 5000), rng.randrange(0, 3000)
        low = max(0, most + rng.randrange(-3000, 200))
        expected = _bisection(most, pointer, alignment, before, low)
        assert max(low + 1, _smallest_fit(most, pointer, alignment, before)) == expected


@pytest.mark.parametrize(("seed", "max_ops", "chains"), [(0, 4, 150), (1, 4, 150), (2, 4, 150),
                                                         (3, 40, 40)])  # fmt: skip
def test_chain_planner_with_shrinking_tensors_equals_the_greedy_planner(seed, max_ops, chains):
    """Chains shaped like a CNN (tensors shrink along the chain, equal sizes within a stage),
    where the chain planner stops early: still TFLM's greedy high-water mark. Long pieces
    have long-lived tensors (like patch outputs kept for the concatenation); pieces planned
    without memoising (transient) give the same mark, and so does the compiled flat planner."""
    rng = random.Random(seed)
    for _ in range(chains):
        scale = 16 * rng.randint(8, 64)
        requests = [BufferRequest(scale, 0, 0)]
        scratch, pieces, base = [], [], 0
        for _ in range(rng.randint(2, 8)):
            scale = max(16, scale // rng.choice([1, 1, 2, 4]) // 16 * 16)
            ops = rng.randint(1, max_ops)
            sizes = [16 * rng.randint(1, 3 * scale // 16) for _ in range(ops - 1)] + [scale]
            lasts = [rng.randint(i + 2, ops) if i + 1 < ops else 0 for i in range(ops)]
            entry_last = rng.randint(1, ops)
            extra = [(16 * rng.randint(1, 4), rng.randint(1, ops))
                     for _ in range(rng.randrange(2))]  # fmt: skip
            transient = rng.random() < 0.3
            pieces.append(plan_piece(ops, entry_last, sizes, lasts, [s for s, _ in extra],
                                     [scope for _, scope in extra], transient))  # fmt: skip
            previous = requests[-1]
            requests[-1] = BufferRequest(previous.size, previous.first_used, base + entry_last)
            requests += [
                BufferRequest(size, base + i + 1, base + (lasts[i] or i + 1))
                for i, size in enumerate(sizes)
            ]
            scratch += [BufferRequest(s, base + scope, base + scope) for s, scope in extra]
            base += ops
        requests += scratch
        expected = plan_greedy(requests).high_water
        assert chain_high_water(pieces, requests[0].size) == expected
        assert _flat_plan.flat_high_water(pieces, requests[0].size) == expected


@pytest.mark.parametrize("pointer_bytes", [4, 8])
def test_patches_over_a_fused_first_stage_are_exact(pointer_bytes, planner):
    """The patched piece is assembled per layer for fused blocks (two layers, a 3x3 conv and a
    project, with the residual inside the patches) as for inverted residuals."""
    space = get_space("tiny-cnn", num_classes=10, in_channels=3)
    for genome in (
        "r24-st1-w0.35-rk1-p2s2-f2-k33.3.3.3-e32.2.2.2",
        "r32-w0.5-rk0.75-p3s2-f1-k333.3.5.7-e264.3.2.2",
        "r40-st1-w0.75-rk0.5-p4s2-f1-k3.3.3.3-e6.2.2.2",
    ):
        cfg = space.decode(genome)
        assert estimate_config_bytes(cfg, pointer_bytes) == _full(cfg, pointer_bytes), genome


def _two_stage_configs(count: int, seed: int) -> list:
    return _family_configs(count, seed)[2 * count : 3 * count]  # see _family_configs


def _bundle_figures(bundle, input_bytes: int = 96) -> tuple:
    """Everything of a bundle the config's figures read, its plan by its high-water mark: a
    patched piece's own constants (all but the zero points and int32 data another piece may
    share) count the same whether added up already or kept by key."""
    merged, shared = dict(bundle.merged), dict(bundle.shared)
    public = {k: v for k, v in shared.items() if _config_fast._is_public(_key(k))}
    own_flash = sum(merged.values()) + sum(v for k, v in shared.items() if k not in public)
    columns = bundle.plan.columns
    return (
        bundle.tensors + len(merged), bundle.requests, bundle.flash + own_flash,
        bundle.layouts, bundle.first_opcode, sorted(public.items()), bundle.run,
        columns[:, 0].tolist(), sorted(map(tuple, columns[:, 1:].T.tolist())),
        _flat_plan.flat_high_water([bundle.plan], input_bytes),
    )  # fmt: skip


def _key(number: int) -> tuple:
    return _config_fast._KEY_TUPLES[number]


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_patch_assembly_equals_the_python_assembly(seed):
    """A two-stage patched piece assembled from layer templates in compiled code has the
    same tensors, flash, constants, tail and buffers as the one assembled patch by patch in
    Python, for random configs (grids 2-4, 1 or 3 input channels) and both pointer widths;
    templates made for one config serve the next ones."""
    if _patched_kernel.kernel() is None:
        pytest.skip("numba is not installed")
    _config_fast.clear_caches()
    whole_image_patch = get_space("tiny-cnn", 10, 1).decode(  # a patch reads all the image
        "r24-st1-w0.5-rk0.5-p3s2-fs1-k555.553.557.7-e232.332.366.6"
    )
    configs = [*_two_stage_configs(60, seed), whole_image_patch]
    for cfg in configs:
        for pointer_bytes in (4, 8):
            config = from_config._runtime_for(pointer_bytes, 16)
            compiled = _config_fast._kernel_patched(cfg, config)
            assert compiled is not None
            expected = _config_fast._assembled_patched(cfg, config)
            assert _bundle_figures(compiled) == _bundle_figures(expected), (cfg, pointer_bytes)
    assert len(_config_fast._TEMPLATES) == 2  # one store per runtime


def test_grid_geometry_is_the_exporters_patch_plan():
    """The compiled grid geometry's ranges and zeros per axis position and layer are the
    exporter's patch plan (``axis_plan``), and compiled and plain Python agree, for random
    layer shapes and grids."""
    from edgekit.spaces.tiny_cnn import axis_plan, same_padding

    rng = random.Random(8)
    compiled = _patched_kernel.geometry()
    for _ in range(300):
        layers = rng.randint(3, 16)
        kernels = [rng.choice([1, 3, 5, 7]) for _ in range(layers)]
        strides = [rng.choice([1, 1, 2]) for _ in range(layers)]
        sources = [rng.randrange(i) if i and rng.random() < 0.3 else -1 for i in range(layers)]
        resolution, grid = rng.choice([16, 24, 32, 40]), rng.randint(2, 4)
        arrays = [np.array(values, np.int64) for values in (kernels, strides, sources)]
        result = compiled(resolution, grid, *arrays)
        python = _patched_kernel._grid_geometry(resolution, grid, *arrays)
        assert result[0] == python[0]
        for got, expected in zip(result[1:], python[1:], strict=True):
            np.testing.assert_array_equal(got, expected)
        convs, size = [], resolution
        for kernel, stride in zip(kernels, strides, strict=True):
            out, before, _ = same_padding(size, kernel, stride)
            convs.append((size, kernel, stride, before))
            size = out
        assert result[0] == size
        if size < grid:
            assert result[1].size == 0
            continue
        plan = axis_plan(size, grid, tuple(convs))
        assert result[1].tolist() == [
            [[*rows, *zeros, *out] for rows, zeros, out in steps] for steps in plan
        ]


def test_patch_assembly_runs_as_plain_python_too(monkeypatch):
    """Without numba the same assembly code runs as Python, with the same result."""
    if _patched_kernel.kernel() is None:
        pytest.skip("numba is not installed")
    config = from_config._runtime_for(4, 16)
    configs = _two_stage_configs(3, seed=5)
    compiled = [_bundle_figures(_config_fast._kernel_patched(cfg, config)) for cfg in configs]
    monkeypatch.setattr(_patched_kernel, "kernel", lambda: _patched_kernel._assemble)
    assert [
        _bundle_figures(_config_fast._kernel_patched(cfg, config)) for cfg in configs
    ] == compiled


def test_without_the_compiled_assembly_patched_configs_are_assembled_in_python(monkeypatch):
    monkeypatch.setattr(_patched_kernel, "kernel", lambda: None)
    monkeypatch.setattr(_combine, "patched_kernel", lambda: None)  # built on it (cached)
    monkeypatch.setattr(_config_fast, "_FLAT_AFTER", -1)
    from_config.clear_estimates()
    cfg = _two_stage_configs(1, seed=3)[0]
    assert _config_fast._kernel_patched(cfg, from_config._runtime_for(4, 16)) is None
    assert estimate_config_bytes(cfg) == _full(cfg, 4)
    from_config.clear_estimates()


def test_a_block_seen_at_one_map_size_is_exact_at_another():
    """Whole-image blocks are kept as templates of every map size: a block first built at
    one size and then needed at another gives the bundle built at that size (blocks of a
    random config, their templates made from the same config at another resolution)."""
    config = from_config._runtime_for(4, 16)
    space = get_space("tiny-cnn", 10, 3)
    rng = random.Random(4)
    checked = 0
    while checked < 60:
        cfg = space.sample(rng)
        if cfg.patch_grid > 1:
            continue
        other = dataclasses.replace(cfg, resolution=rng.choice([24, 28, 32, 40]))
        _config_fast._BLOCK_TEMPLATES.clear()
        for key, spec in zip(_config_fast._cnn_keys(other), pieces_of(other), strict=True):
            if isinstance(key, int):
                _config_fast._block_template(key, config, spec)
        for key, spec in zip(_config_fast._cnn_keys(cfg), pieces_of(cfg), strict=True):
            if isinstance(key, int):
                template = _config_fast._block_template(key, config)
                assert template is not None
                sized = _config_fast._sized_block(template, _config_fast.block_size(key), config)
                expected = _config_fast._bundle(spec, config)
                assert _bundle_figures(sized) == _bundle_figures(expected), (cfg, key)
                checked += 1
    _config_fast._BLOCK_TEMPLATES.clear()



@pytest.mark.parametrize("pointer_bytes", [4, 8])
def test_compiled_combination_equals_the_python_one(pointer_bytes, monkeypatch):
    """A config's pieces added up in one compiled call (sums, constants counted once, tail,
    plan, arena arithmetic, flash) give the same figures as adding them up in Python."""
    if _combine.kernel() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_config_fast, "_FLAT_AFTER", -1)
    config = from_config._runtime_for(pointer_bytes, 16)
    configs = _family_configs(4, seed=30 + pointer_bytes)
    compiled = [_config_fast.fast_figures(cfg, config) for cfg in configs]
    monkeypatch.setattr(_combine, "kernel", lambda: None)
    assert [_config_fast.fast_figures(cfg, config) for cfg in configs] == compiled


@pytest.mark.parametrize("pointer_bytes", [4, 8])
@pytest.mark.parametrize(
    ("kernel", "families"),
    [("patched_kernel", slice(60, 90)), ("found_kernel", slice(0, 60))],
    ids=["two-stage", "whole-image and one-stage"],
)
def test_a_config_found_and_combined_in_one_call_equals_the_python_lookup(
    pointer_bytes, kernel, families, monkeypatch
):
    """A tiny-cnn config whose pieces are known is combined in one compiled call that finds
    their rows (and, two-stage patched, assembles its patched part), with the figures of the
    rows found in Python and combined apart (the patched part assembled in its own call)."""
    if getattr(_combine, kernel)() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_config_fast, "_FLAT_AFTER", -1)
    config = from_config._runtime_for(pointer_bytes, 16)
    configs = _family_configs(30, seed=40 + pointer_bytes)[families]
    one_call = getattr(_combine, kernel)()
    calls = []
    monkeypatch.setattr(_combine, kernel, lambda: None)
    apart = [_config_fast.fast_figures(cfg, config) for cfg in configs]  # rows made too

    def counted(*arguments):
        calls.append(1)
        return one_call(*arguments)

    monkeypatch.setattr(_combine, kernel, lambda: counted)
    assert [_config_fast.fast_figures(cfg, config) for cfg in configs] == apart
    assert len(calls) == len(configs)


def test_the_compiled_row_lookup_finds_the_rows_of_the_python_keys(monkeypatch):
    """A tiny-cnn config's pieces after its first are found in compiled code by the keys
    _cnn_keys gives them in Python: the same rows, compiled and as plain Python; none when
    a piece has no row yet (whole-image, one- and two-stage patched configs)."""
    if _combine.patched_kernel() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_config_fast, "_FLAT_AFTER", -1)
    config = from_config._runtime_for(4, 16)
    configs = _family_configs(14, seed=7)[: 3 * 14]  # the three tiny-cnn families
    for cfg in configs[::14] + configs[1:10] + configs[15:24] + configs[29:38]:
        _config_fast.fast_figures(cfg, config)  # their rows made and indexed
    state = _config_fast._ROWS[config]
    checked = 0
    for cfg in configs:
        keys = _config_fast._cnn_keys(cfg)[1:]
        two_stage = cfg.patch_grid > 1 and cfg.patch_stages == 2
        later = _config_fast._later(cfg, int(two_stage), state)
        expected = [state.rows[key] for key in keys] if all(k in state.rows for k in keys) else []
        assert _combine._later_rows(*later).tolist() == expected
        assert _combine._later_rows.py_func(*later).tolist() == expected
        checked += bool(expected)
    assert checked >= 30


def test_the_row_index_finds_every_key_as_it_grows():
    index = _combine.RowIndex()
    rng = random.Random(0)
    keys = [rng.randrange(-(1 << 50), 1 << 62) for _ in range(3000)]
    for row, key in enumerate(keys):
        index.add(key, row)
    index.add(keys[0], 99)  # a key already there keeps its row
    assert index.count == len(set(keys))
    for row, key in enumerate(keys):
        at = _patched_kernel.slot(index.keys, key)
        assert (index.keys[at], index.rows[at]) == (key, row)
    assert index.keys[_patched_kernel.slot(index.keys, 12345)] == _patched_kernel.EMPTY


def test_keys_that_differ_only_in_their_high_bits_spread_over_the_table():
    """Block keys of one map size share their low 16 bits (and a patch's units their
    paddings): their slots must still spread, in Python and compiled alike."""
    keys = np.full(1 << 14, _patched_kernel.EMPTY, np.int64)
    home = [
        _patched_kernel.slot(keys, 12 | kernel << 16 | 1 << 32 | number << 40)
        for kernel in (0, 3, 5, 7) for number in range(1000)
    ]  # fmt: skip
    assert len(set(home)) > 0.7 * len(home)
    if _combine.patched_kernel() is not None:
        compiled = _combine._slot  # compiled by patched_kernel
        rng = random.Random(1)
        for key in [rng.randrange(-(1 << 62) + 1, 1 << 62) for _ in range(2000)] + home:
            assert compiled(keys, key) == _patched_kernel.slot(keys, key)


# Two-stage patched CNNs on a 3x3 grid whose middle patch reads the whole image (no slice of
# its own). Before the exporter chained the patches, the converter ran that patch's first
# layers right after the first patch's (its shared weights are named after the first patch,
# and the converter orders ops by name), and these configs' arenas or heads differed from a
# patch-by-patch plan.
@pytest.mark.parametrize(
    ("genome", "pointer_bytes"),
    [
        ("r24-st1-w1-rk0.75-p3s2-fs1-k537.5.553.5-e244.2.344.2", 4),
        ("r24-st1-w0.35-rk0.75-p3s2-fs1-k573.5.5.577-e326.3.3.624", 8),
        ("r24-st1-w0.35-rk0.5-p3s2-fs1-k77.55.53.5-e66.42.34.6", 8),
        ("r24-st1-w0.5-rk0.5-p3s2-fs1-k555.553.557.7-e232.332.366.6", 4),
    ],
)
def test_a_whole_image_patch_among_sliced_ones_runs_in_its_turn(genome, pointer_bytes):
    from edgekit.estimate._config_spaces import build_graph

    cfg = get_space("tiny-cnn", 2, 3).decode(genome)
    ops, _ = build_graph(cfg).finish()
    patches = [op.output.name.split("/")[0] for op in ops if op.output.name.startswith("patch")]
    patches = [name for name in patches if "_row" not in name and "_merge" not in name]
    assert "patch1_1/input/strided_slice" not in {op.output.name for op in ops}
    assert patches == sorted(patches)
    config = from_config._runtime_for(pointer_bytes, 16)
    figures, flash = _config_fast.fast_figures(cfg, config)
    full = estimate_config(cfg, pointer_bytes=pointer_bytes)
    assert (figures.arena_bytes, figures.head_bytes, flash) == (
        full.arena_bytes, full.head_bytes, full.flash_bytes,
    )  # fmt: skip
