"""tiny-cnn space: configs, genomes, vectors, counts, supernet extraction and patch execution."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgekit.errors import ConfigError
from edgekit.spaces.tiny_cnn import (
    NUM_BLOCKS,
    TinyCnnConfig,
    TinyCnnSpace,
    layer_plan,
    patch_plan,
)
from edgekit.spaces.tiny_cnn_net import extract

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space() -> TinyCnnSpace:
    return TinyCnnSpace(num_classes=10, in_channels=3)


@pytest.fixture(scope="module")
def supernet(space: TinyCnnSpace) -> torch.nn.Module:
    """A supernet with random weights *and* random BN statistics, in eval mode, so that
    extraction and patch equality are real checks (fresh BN stats are the identity)."""
    torch.manual_seed(0)
    net = space.build_supernet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
        net.classifier.weight.normal_(0.0, 0.3)
        net.classifier.bias.normal_(0.0, 0.3)
    return net.eval()


def _configs(space: TinyCnnSpace, n: int, seed: int = 0) -> list[TinyCnnConfig]:
    rng = random.Random(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n)]


def _with(cfg: TinyCnnConfig, **changes: object) -> TinyCnnConfig:
    return dataclasses.replace(cfg, **changes)


# --- configs, genomes, vectors ----------------------------------------------------------------
def test_round_trips_json_genome_and_vector(space: TinyCnnSpace) -> None:
    for cfg in _configs(space, 300):
        space.validate(cfg)
        assert space.from_json(cfg.to_json()) == cfg
        assert space.decode(space.encode(cfg)) == cfg
        assert space.from_vector(space.to_vector(cfg)) == cfg


def test_genome_is_readable(space: TinyCnnSpace) -> None:
    genome = "r32-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22"
    cfg = space.decode(genome)
    assert (cfg.resolution, cfg.width_mult, cfg.rank_ratio) == (32, 0.5, 0.5)
    assert (cfg.patch_grid, cfg.patch_stages, cfg.depths) == (2, 1, (2, 3, 1, 2))
    assert cfg.kernel_sizes == (3, 5, 3, 3, 5, 7, 3, 3, 3, 7, 7, 3)
    assert cfg.expand_ratios == (3, 4, 2, 3, 4, 6, 6, 2, 2, 2, 2, 2)
    assert space.encode(cfg) == genome
    assert space.encode(space.smallest()) == "r24-w0.35-rk0.5-p1-k3.3.3.3-e2.2.2.2"
    # Token order is free; '1.0' and '1' both parse.
    assert space.decode("k3.3.3.3-e2.2.2.2-p1-rk1.0-w1-r24").rank_ratio == 1.0


def test_stride_1_stem_keeps_the_resolution_and_old_genomes_mean_stride_2(
    space: TinyCnnSpace,
) -> None:
    old = "r32-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22"
    cfg = space.decode(old)
    assert cfg.stem_stride == 2 and space.encode(cfg) == old
    fine = space.decode("r32-st1-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22")
    assert fine == _with(cfg, stem_stride=1) and space.encode(fine).startswith("r32-st1-w0.5")
    assert space.decode("r32-st2-w0.5-rk0.5-p2s1-k35.357.3.77-e34.346.6.22") == cfg
    coarse, full = layer_plan(cfg), layer_plan(fine)
    assert coarse[0].out_shape[:2] == (16, 16) and full[0].out_shape[:2] == (32, 32)
    assert full[-2].in_shape[:2] == (4, 4) and coarse[-2].in_shape[:2] == (2, 2)
    # Same weights, about 4x the work.
    assert space.count(fine).params == space.count(cfg).params
    assert space.count(fine).macs > 3 * space.count(cfg).macs
    # A config saved before the knob existed has no stem_stride field.
    data = cfg.to_dict()
    del data["stem_stride"]
    assert space.from_dict(data) == cfg
    assert space.largest().stem_stride == 1 and space.smallest().stem_stride == 2


def test_stride_1_first_stage_keeps_the_stem_resolution(space: TinyCnnSpace) -> None:
    old = "r32-st1-w0.5-rk1-p2s2-f2-k33.3.5.7-e23.3.4.6"
    cfg = space.decode(old)
    assert cfg.first_stage_stride == 2 and space.encode(cfg) == old
    fine = space.decode("r32-st1-w0.5-rk1-p2s2-f2-fs1-k33.3.5.7-e23.3.4.6")
    assert fine == _with(cfg, first_stage_stride=1)
    assert space.encode(fine) == "r32-st1-w0.5-rk1-p2s2-f2-fs1-k33.3.5.7-e23.3.4.6"
    layers = {layer.name: layer for layer in layer_plan(fine)}
    first = layers["stages.0.0.fused"]
    assert (first.stride, first.in_shape[:2], first.out_shape[:2]) == (1, (32, 32), (32, 32))
    assert layers["stages.1.0.fused"].out_shape[:2] == (16, 16)
    assert layer_plan(fine)[-2].in_shape[:2] == (8, 8)  # ResNet-8's resolutions
    assert space.count(fine).params == space.count(cfg).params
    assert space.count(fine).macs > 3 * space.count(cfg).macs
    data = cfg.to_dict()
    del data["first_stage_stride"]  # saved before the knob existed
    assert space.from_dict(data) == cfg
    # The teacher keeps stride 2 there (the same weights at 4x the pixels train slowly).
    assert space.largest().first_stage_stride == 2 == space.smallest().first_stage_stride
    with pytest.raises(ConfigError, match=r"token 'fs3': first_stage_stride value '3' not"):
        space.decode("r32-st1-w0.5-rk1-p1-fs3-k3.3.5.7-e2.3.4.6")


def test_fused_stages_replace_expand_and_depthwise_by_one_3x3_conv(space: TinyCnnSpace) -> None:
    plain = space.decode("r32-w0.5-rk1-p1-k35.3.5.7-e23.3.4.6")
    fused = space.decode("r32-w0.5-rk1-p1-f2-k33.3.5.7-e23.3.4.6")
    assert plain.fused_stages == 0 and fused == _with(
        plain, fused_stages=2, kernel_sizes=(3,) * 6 + plain.kernel_sizes[6:]
    )
    assert space.encode(fused) == "r32-w0.5-rk1-p1-f2-k33.3.5.7-e23.3.4.6"
    layers = {layer.name: layer for layer in layer_plan(fused)}
    first = layers["stages.0.0.fused"]  # 8 -> 16 channels at stride 2, no expand / dw
    assert (first.op, first.kernel, first.stride, first.in_shape, first.out_shape) == (
        "conv2d", 3, 2, (16, 16, 8), (8, 8, 16)
    )
    assert "stages.0.0.expand" not in layers and "stages.0.0.dw" not in layers
    assert layers["stages.0.1.project"].residual_from == "stages.0.1.fused"
    assert "stages.2.0.dw" in layers  # later stages keep inverted residuals
    # One dense 3x3 conv holds more weights than 1x1 expand + depthwise.
    assert space.count(fused).params > space.count(plain).params
    with pytest.raises(ConfigError, match=r"stage 0 is fused \(f1\), its convs are 3x3"):
        space.decode("r32-w0.5-rk1-p1-f1-k35.3.5.7-e23.3.4.6")
    with pytest.raises(ConfigError, match=r"kernel_sizes\[1\]=5: stage 0 is fused"):
        space.validate(_with(fused, kernel_sizes=(3, 5, *fused.kernel_sizes[2:])))


def test_sample_is_deterministic_and_covers_knobs(space: TinyCnnSpace) -> None:
    first = _configs(space, 200, seed=3)
    assert first == _configs(space, 200, seed=3)
    assert {c.patch_grid for c in first} == {1, 2, 3, 4}
    assert {c.stem_stride for c in first} == {1, 2}
    assert {c.fused_stages for c in first} == {0, 1, 2}
    assert {c.first_stage_stride for c in first} == {1, 2}
    assert {k for c in first for k in c.kernel_sizes} == {3, 5, 7}


def test_any_in_bounds_vector_is_valid(space: TinyCnnSpace) -> None:
    bounds = space.vector_bounds()
    assert len(bounds) == 8 + 4 + 2 * NUM_BLOCKS
    rng = random.Random(1)
    for _ in range(300):
        cfg = space.from_vector([rng.randrange(b) for b in bounds])
        space.validate(cfg)
        assert space.decode(space.encode(cfg)) == cfg
    assert space.from_vector([b - 1 for b in bounds]) == _with(
        space.largest(), patch_grid=4, patch_stages=2, first_stage_stride=1
    )
    assert space.from_vector([0] * len(bounds)) == space.smallest()


@pytest.mark.parametrize(
    ("vector_change", "message"),
    [((0, 4), r"gene resolution=4: expected an index in \[0, 3\]"),
     ((10, -1), r"gene depths\[2\]=-1"),
     ((13, 1.0), r"gene kernel_sizes\[1\]=1.0: expected an integer index")],
)  # fmt: skip
def test_bad_vectors_name_the_gene(
    space: TinyCnnSpace, vector_change: tuple[int, object], message: str
) -> None:
    vec: list = space.to_vector(space.smallest())
    index, value = vector_change
    vec[index] = value
    with pytest.raises(ConfigError, match=message):
        space.from_vector(vec)
    with pytest.raises(ConfigError, match="expected 36 genes"):
        space.from_vector(vec[:-1])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resolution": 30}, r"resolution=30: expected one of \(24, 28, 32, 40\)"),
        ({"resolution": 32.0}, r"resolution=32.0: expected one of"),
        ({"width_mult": 0.3}, r"width_mult=0.3: expected one of \(0.35, 0.5, 0.75, 1.0\)"),
        ({"rank_ratio": 0.1}, r"rank_ratio=0.1: expected one of \(0.5, 0.75, 1.0\)"),
        ({"patch_grid": 5}, r"patch_grid=5: expected one of \(1, 2, 3, 4\)"),
        ({"patch_grid": True}, r"patch_grid=True: expected one of"),
        ({"patch_stages": 2}, r"patch_stages=2: expected 1 when patch_grid=1"),
        ({"depths": (1, 2, 3)}, r"depths=\(1, 2, 3\): expected a tuple of 4 values"),
        ({"depths": (1, 4, 1, 1)}, r"depths\[1\]=4: expected one of \(1, 2, 3\)"),
        ({"kernel_sizes": (4,) + (3,) * 11}, r"kernel_sizes\[0\]=4: expected one of \(3, 5, 7\)"),
        ({"kernel_sizes": (3, 7) + (3,) * 10}, r"kernel_sizes\[1\]=7: block 1 of stage 0 is "
                                               r"beyond depths\[0\]=1, expected 3"),
        ({"expand_ratios": (5,) + (2,) * 11}, r"expand_ratios\[0\]=5: expected one of \(2, 3, 4"),
        ({"num_classes": 5}, r"num_classes=5: this tiny-cnn space expects 10"),
        ({"in_channels": 1}, r"in_channels=1: this tiny-cnn space expects 3"),
    ],
)  # fmt: skip
def test_validation_names_field_and_allowed_values(
    space: TinyCnnSpace, changes: dict, message: str
) -> None:
    bad = _with(space.smallest(), **changes)
    with pytest.raises(ConfigError, match=message):
        space.validate(bad)
    with pytest.raises(ConfigError, match=message):
        space.from_dict(bad.to_dict())


def test_from_dict_reports_missing_and_unknown_fields(space: TinyCnnSpace) -> None:
    data = space.smallest().to_dict()
    with pytest.raises(ConfigError, match=r"missing config field\(s\) \['depths'\]"):
        space.from_dict({k: v for k, v in data.items() if k != "depths"})
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['colour'\]"):
        space.from_dict({**data, "colour": 1})
    # An integer width (as people write it by hand) is the same config.
    assert space.from_dict({**data, "width_mult": 1, "rank_ratio": 1}) == _with(
        space.smallest(), width_mult=1.0, rank_ratio=1.0
    )


@pytest.mark.parametrize(
    ("genome", "message"),
    [
        ("r32-w0.5-rk0.5-p1-k3.3.3.3", r"missing token\(s\) \['e'\]"),
        ("r32-w0.5-rk0.5-p1-k3.3.3.3-e2.2.2.2-x1", r"genome token 'x1': expected a prefix"),
        ("r30-w0.5-rk0.5-p1-k3.3.3.3-e2.2.2.2", r"token 'r30': resolution value '30' not in"),
        ("r32-w0.4-rk0.5-p1-k3.3.3.3-e2.2.2.2", r"token 'w0.4': width_mult value '0.4' not in"),
        ("r32-w0.5-rk0.3-p1-k3.3.3.3-e2.2.2.2", r"token 'rk0.3': rank_ratio value '0.3' not"),
        ("r32-w0.5-rk0.5-p5s1-k3.3.3.3-e2.2.2.2", r"token 'p5s1': patch_grid '5s1' not in"),
        ("r32-w0.5-rk0.5-p2s3-k3.3.3.3-e2.2.2.2", r"token 'p2s3': patch_stages 3 not in"),
        ("r32-w0.5-rk0.5-p1-k3.3.3-e2.2.2", r"token 'k3.3.3': expected 4 dot-separated"),
        ("r32-w0.5-rk0.5-p1-k3.3.3.3333-e2.2.2.2", r"token 'k3.3.3.3333': stage '3333' has 4"),
        ("r32-w0.5-rk0.5-p1-k3.3.3.4-e2.2.2.2", r"token 'k3.3.3.4': kernel_sizes value '4'"),
        ("r32-w0.5-rk0.5-p1-k3.3.3.3-e2.2.2.22", r"expand ratios per stage \[1, 1, 1, 2\] do"),
        ("r32-r32-w0.5-rk0.5-p1-k3.3.3.3-e2.2.2.2", r"token 'r32': resolution given twice"),
        ("r32-st3-w0.5-rk0.5-p1-k3.3.3.3-e2.2.2.2", r"token 'st3': stem_stride value '3' not"),
    ],
)
def test_decode_errors_name_the_token(space: TinyCnnSpace, genome: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space.decode(genome)


def test_smallest_and_largest_bound_the_space(space: TinyCnnSpace) -> None:
    low, high = space.count(space.smallest()), space.count(space.largest())
    # The largest keeps the first stage at stride 2; at stride 1 it bounds the MACs too.
    most_macs = space.count(_with(space.largest(), first_stage_stride=1)).macs
    for cfg in _configs(space, 100):
        whole = space.count(_with(cfg, patch_grid=1, patch_stages=1))
        assert low.params <= whole.params <= high.params
        assert low.macs <= whole.macs <= most_macs
    assert low.params < 10_000 and high.params < 1_000_000  # MCU-sized int8 weights


def test_low_rank_1x1_convs(space: TinyCnnSpace) -> None:
    full = layer_plan(_with(space.largest(), rank_ratio=1.0))
    low = layer_plan(_with(space.largest(), rank_ratio=0.5))
    assert all(layer.rank == 0 for layer in full)
    expand = {layer.name: layer for layer in low}["stages.3.1.expand"]  # 96 -> 576
    assert expand.rank == 48 and expand.params == 48 * (96 + 576) + 2 * 576
    assert space.count(space.largest()).params > space.count(
        _with(space.largest(), rank_ratio=0.5)).params  # fmt: skip


# --- patch plan (pure Python) -----------------------------------------------------------------
@pytest.mark.parametrize("input_hw", [(40, 40), (27, 27), (30, 22), (16, 16)])
@pytest.mark.parametrize(("grid", "stages"), [(2, 1), (3, 2), (4, 2), (4, 1)])
def test_patch_plan_tiles_the_output_and_chains(
    space: TinyCnnSpace, input_hw: tuple[int, int], grid: int, stages: int
) -> None:
    cfg = _with(space.largest(), patch_grid=grid, patch_stages=stages)
    layers, plan = layer_plan(cfg, input_hw), patch_plan(cfg, input_hw)
    assert plan is not None and len(plan.patches) == grid * grid
    out_h, out_w, _ = layers[plan.num_layers - 1].out_shape
    covered = [[0] * out_w for _ in range(out_h)]
    for steps in plan.patches:
        y0, y1, x0, x1 = steps[-1].out_region
        for y in range(y0, y1):
            for x in range(x0, x1):
                covered[y][x] += 1
        for previous, step in itertools.pairwise(steps):
            assert step.in_region == previous.out_region
        for layer, step in zip(layers, steps, strict=False):
            h, w, _ = layer.in_shape
            y0, y1, x0, x1 = step.in_region
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
            top, bottom, left, right = step.pads
            # Zeros only where the region meets the border, never more than SAME would add.
            assert (top == 0 or y0 == 0) and (bottom == 0 or y1 == h)
            assert (left == 0 or x0 == 0) and (right == 0 or x1 == w)
            assert max(top, left) <= max(layer.pads) and max(bottom, right) <= max(layer.pads)
    assert all(count == 1 for row in covered for count in row)


def test_patches_cost_macs_not_params(space: TinyCnnSpace) -> None:
    cfg = _with(space.largest(), resolution=32)
    whole = space.count(cfg)
    previous = whole.macs
    for grid in (2, 3, 4):
        patched = space.count(_with(cfg, patch_grid=grid, patch_stages=2))
        assert patched.params == whole.params and patched.macs > previous
        previous = patched.macs
    with pytest.raises(ConfigError, match="patch_grid=4: the patched part's output is only 3x3"):
        patch_plan(_with(cfg, patch_grid=4, patch_stages=2, stem_stride=2), (10, 10))
    with pytest.raises(ConfigError, match="patch_grid=4: the patched part's output is only 3x3"):
        patch_plan(_with(cfg, patch_grid=4, patch_stages=2, stem_stride=1), (5, 5))


# --- torch: supernet, extraction, patches, counts ---------------------------------------------
def _equality_configs(space: TinyCnnSpace) -> list[TinyCnnConfig]:
    rng = random.Random(7)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(8)]


def test_extract_equals_supernet(space: TinyCnnSpace, supernet: torch.nn.Module) -> None:
    torch.manual_seed(1)
    for cfg in _equality_configs(space):
        x = torch.rand(2, 3, cfg.resolution, cfg.resolution)
        supernet.set_active(cfg)
        assert supernet.active == cfg
        net = space.extract(supernet, cfg)
        assert not net.training
        with torch.no_grad():
            expected, got = supernet(x), net(x)
        assert expected.shape == (2, 10)
        assert expected.std() > 0.1  # a real signal, not ~0 logits
        assert (expected - got).abs().max() <= 1e-5, space.encode(cfg)
        # Weights are copies, not views of the supernet's.
        assert all(p.data_ptr() != q.data_ptr() for p in net.parameters()
                   for q in supernet.parameters())  # fmt: skip


def test_extracted_module_names_and_counts(space: TinyCnnSpace, supernet: torch.nn.Module) -> None:
    cfg = space.decode("r24-w0.5-rk0.5-p3s2-k35.7.3.5-e64.2.3.6")
    net = space.extract(supernet, cfg)
    names = {name for name, _ in net.named_modules()}
    for layer in layer_plan(cfg):
        if layer.op != "mean":
            assert layer.name in names
    assert {"stem.conv", "stem.bn", "first.dw.conv", "stages.0.1.expand.bn", "classifier"} <= names
    assert "stages.0.0.project.conv1" in names and "stages.0.0.project.conv2" in names
    assert "stages.0.2.expand" not in names  # truncated
    assert all(isinstance(m, torch.nn.BatchNorm2d) for n, m in net.named_modules()
               if n.endswith(".bn"))  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_counts_match_flop_counter_and_numel(
    space: TinyCnnSpace, supernet: torch.nn.Module, seed: int
) -> None:
    rng = random.Random(100 + seed)
    configs = [space.sample(rng) for _ in range(6)]
    configs.append(_with(space.largest(), patch_grid=3, patch_stages=2))
    for cfg in configs:
        net = space.extract(supernet, cfg)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.rand(1, 3, cfg.resolution, cfg.resolution))
        counts = space.count(cfg)
        assert counts.params == sum(p.numel() for p in net.parameters())
        assert counts.macs == counter.get_total_flops() // 2, space.encode(cfg)


@pytest.mark.parametrize(
    ("genome", "input_hw"),
    [
        ("r24-w0.35-rk0.5-p4s2-k3.3.3.3-e2.2.2.2", (16, 16)),
        ("r24-w0.5-rk1-p3s2-k777.5.3.3-e642.2.2.2", (24, 24)),
        ("r32-w0.75-rk0.5-p2s1-k5.3.3.3-e3.4.2.2", (27, 27)),
        ("r40-w1-rk0.75-p4s2-k573.7.7.7-e346.6.2.3", (40, 40)),
        ("r40-w0.35-rk1-p3s1-k7.3.3.3-e6.2.2.2", (30, 22)),
        ("r32-st1-w0.35-rk1-p4s2-f1-fs1-k33.3.3.3-e32.2.2.2", (32, 32)),
        ("r32-w1-rk0.5-p3s2-k55.3.3.3-e62.2.2.2", (29, 31)),
    ],
)
def test_patch_execution_equals_whole_image(
    space: TinyCnnSpace, supernet: torch.nn.Module, genome: str, input_hw: tuple[int, int]
) -> None:
    patched = space.decode(genome)
    whole = _with(patched, patch_grid=1, patch_stages=1)
    x = torch.rand(2, 3, *input_hw)
    with torch.no_grad():
        supernet.set_active(whole)
        expected = supernet(x)
        supernet.set_active(patched)
        got = supernet(x)
        net = space.extract(supernet, patched)
        from_extracted = net(x)
    assert (expected - got).abs().max() <= 1e-5
    assert (expected - from_extracted).abs().max() <= 1e-5


def test_elastic_kernel_is_centre_crop(space: TinyCnnSpace, supernet: torch.nn.Module) -> None:
    full = supernet.get_submodule("stages.1.0.dw").conv.weight
    for kernel in (3, 5, 7):
        cfg = space.decode(f"r28-w1-rk1-p1-k3.{kernel}.3.3-e2.6.2.2")
        dw = space.extract(supernet, cfg).get_submodule("stages.1.0.dw").conv.weight
        crop = (7 - kernel) // 2
        assert dw.shape == (dw.shape[0], 1, kernel, kernel)
        assert torch.equal(dw, full[: dw.shape[0], :, crop : 7 - crop, crop : 7 - crop])


def test_low_rank_full_rank_folds_to_one_conv(
    space: TinyCnnSpace, supernet: torch.nn.Module
) -> None:
    cfg = space.decode("r24-w0.5-rk1-p1-k3.3.3.3-e4.2.2.2")
    expand = space.extract(supernet, cfg).get_submodule("stages.0.0.expand")
    assert hasattr(expand, "conv") and not hasattr(expand, "conv1")
    source = supernet.get_submodule("stages.0.0.expand")
    c_in, c_out = expand.conv.weight.shape[1], expand.conv.weight.shape[0]
    product = source.conv2.weight[:c_out, :c_in, 0, 0] @ source.conv1.weight[:c_in, :c_in, 0, 0]
    torch.testing.assert_close(expand.conv.weight[:, :, 0, 0], product)


def test_training_mode_updates_sliced_bn_stats_and_runs_whole_image(space: TinyCnnSpace) -> None:
    torch.manual_seed(2)
    net = space.build_supernet().train()
    cfg = space.decode("r24-w0.5-rk0.5-p4s2-k3.3.3.3-e2.2.2.2")
    net.set_active(cfg)
    bn = net.stem.bn
    bn.reset_running_stats()
    bn.momentum = None  # cumulative average, as BN recalibration uses
    x = torch.rand(4, 3, 24, 24)
    train_out = net(x)
    assert train_out.shape == (4, 10)
    width = layer_plan(cfg)[0].out_shape[2]
    assert width == 16 and int(bn.num_batches_tracked) == 1
    assert not torch.allclose(bn.running_mean[:width], torch.zeros(width))
    assert torch.equal(bn.running_mean[width:], torch.zeros(32 - width))
    train_out.sum().backward()
    assert net.stem.conv.weight.grad is not None


def test_prepare_input_and_shape_errors(space: TinyCnnSpace, supernet: torch.nn.Module) -> None:
    cfg = space.decode("r24-w0.35-rk1-p1-k3.3.3.3-e2.2.2.2")
    x = torch.rand(3, 3, 32, 32)
    assert space.prepare_input(x, cfg).shape == (3, 3, 24, 24)
    assert space.prepare_input(x[:, :, :24, :24], cfg) is not None
    assert space.input_shape(cfg) == (24, 24, 3)
    supernet.set_active(cfg)
    with pytest.raises(ConfigError, match=r"input of shape \(3, 1, 24, 24\): expected \(N, 3"):
        supernet(torch.rand(3, 1, 24, 24))
    with pytest.raises(ConfigError, match="expected a tiny-cnn supernet"):
        extract(torch.nn.Linear(2, 2), cfg)


def test_supernet_runs_patches_in_eval_mode_only(
    space: TinyCnnSpace, supernet: torch.nn.Module
) -> None:
    patched = space.decode("r24-w0.5-rk0.5-p3s2-k77.3.3.3-e66.2.2.2")
    x = torch.rand(2, 3, 24, 24)

    def macs(cfg: TinyCnnConfig, training: bool) -> int:
        net = copy.deepcopy(supernet).train(training)  # training must not touch the fixture
        net.set_active(cfg)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x)
        return counter.get_total_flops()

    whole = _with(patched, patch_grid=1, patch_stages=1)
    assert macs(patched, training=False) > macs(whole, training=False)
    assert macs(patched, training=True) == macs(whole, training=True)
