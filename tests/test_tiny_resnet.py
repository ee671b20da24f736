"""tiny-resnet specifics (the shared suite in test_spaces_common covers the contract)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgekit.errors import ConfigError
from edgekit.spaces import get_space
from edgekit.spaces.tiny_resnet import TinyResnetSpace, layer_plan, patch_plan

RESNET8_LAYOUT = "r32-c16-w16.32.64-d1.1.1-p1"


@pytest.fixture(scope="module")
def space() -> TinyResnetSpace:
    return get_space("tiny-resnet", num_classes=10, in_channels=3)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def supernet(space: TinyResnetSpace) -> torch.nn.Module:
    torch.manual_seed(0)
    net = space.build_supernet()
    # Random BatchNorm statistics, so that the comparisons below are not of near-constants.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_resnet8_layout_has_resnet8s_maps_and_skips(space: TinyResnetSpace) -> None:
    layers = layer_plan(space.decode(RESNET8_LAYOUT))
    convs = [layer for layer in layers if layer.is_conv]
    assert [layer.out_shape for layer in convs] == [
        (32, 32, 16), (32, 32, 16), (32, 32, 16), (16, 16, 32), (16, 16, 32), (8, 8, 64),
        (8, 8, 64),
    ]  # fmt: skip
    assert all(layer.kernel == 3 and layer.act == "relu6" for layer in convs)
    # The first stage keeps the stem's width: identity skip. Stride-2 blocks have none.
    assert [layer.residual_from for layer in convs] == [
        None, None, "stages.0.0.conv1", None, None, None, None,
    ]  # fmt: skip
    assert [layer.stride for layer in convs] == [1, 1, 1, 2, 1, 2, 1]
    # ResNet-8's 77,946 parameters less its two 1x1 projection shortcuts (with biases).
    assert space.count(space.decode(RESNET8_LAYOUT)).params == 77_946 - (16 * 32 + 32) - (
        32 * 64 + 64
    )


def test_second_blocks_skip_and_patches_end_after_the_first_stride_2_block(
    space: TinyResnetSpace,
) -> None:
    cfg = space.decode("r32-c8-w16.24.32-d2.2.1-p2")
    skips = {layer.name: layer.residual_from for layer in layer_plan(cfg)}
    assert skips["stages.0.0.conv2"] is None  # 8 -> 16 channels
    assert skips["stages.0.1.conv2"] == "stages.0.1.conv1"
    assert skips["stages.1.1.conv2"] == "stages.1.1.conv1"
    plan = patch_plan(cfg)
    assert plan is not None and plan.grid == 2
    patched = layer_plan(cfg)[: plan.num_layers]
    assert [layer.name for layer in patched][-2:] == ["stages.1.0.conv1", "stages.1.0.conv2"]
    assert patched[-1].out_shape == (16, 16, 24)


@pytest.mark.parametrize(
    ("genome", "input_hw"),
    [("r32-c16-w32.24.40-d2.1.1-p2", (32, 32)), ("r24-c24-w8.16.24-d1.1.1-p4", (27, 25))],
)
def test_patch_execution_equals_whole_image(
    space: TinyResnetSpace, supernet: torch.nn.Module, genome: str, input_hw: tuple[int, int]
) -> None:
    patched = space.decode(genome)
    whole = dataclasses.replace(patched, patch_grid=1)
    x = torch.rand(2, 3, *input_hw)
    with torch.no_grad():
        supernet.set_active(whole)
        expected = supernet(x)
        supernet.set_active(patched)
        got = supernet(x)
        from_extracted = space.extract(supernet, patched)(x)
    assert (expected - got).abs().max() <= 1e-5
    assert (expected - from_extracted).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("genome", "message"),
    [
        ("r32-c16-w16.32-d1.1.1-p1", r"token 'w16.32': expected 3 dot-separated stages"),
        ("r32-c16-w64.32.64-d1.1.1-p1", r"widths\[0\]=64 not in \(8, 16, 24, 32\)"),
        ("r32-c16-w16.32.64-d1.3.1-p1", r"depths\[1\]=3 not in \(1, 2\)"),
        ("r32-c12-w16.32.64-d1.1.1-p1", r"token 'c12': stem_channels 12 not in"),
        ("r32-c16-w16.32.64-d1.1.1", r"missing token\(s\) \['p'\]"),
        ("r32-c16-w16.3x.64-d1.1.1-p1", r"token 'w16.3x.64': '3x' is not a number"),
    ],
)
def test_decode_errors_name_the_token(space: TinyResnetSpace, genome: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space.decode(genome)


def test_a_stage_width_error_names_the_stage_and_every_width(space: TinyResnetSpace) -> None:
    bad = dataclasses.replace(space.smallest(), widths=(8, 16, 16))
    with pytest.raises(ConfigError, match=r"widths\[2\]=16: expected one of \(24, .*for stage 2"):
        space.validate(bad)
