from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from edgekit.errors import ConfigError
from edgekit.spaces.tiny_vit import (
    MAX_DEPTH,
    OP_KINDS,
    TinyVitConfig,
    TinyVitSpace,
    is_factorised,
    layer_plan,
    projection_rank,
)
from edgekit.spaces.tiny_vit_net import TinyVitSupernet, pi_resize, prepare_input

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=[1, 3], ids=["grey", "rgb"])
def space(request: pytest.FixtureRequest) -> TinyVitSpace:
    return TinyVitSpace(num_classes=10, in_channels=request.param)


@pytest.fixture(scope="module")
def supernet(space: TinyVitSpace) -> TinyVitSupernet:
    """A supernet with every weight randomised, so that no slice hides behind ones or zeros."""
    torch.manual_seed(0)
    net = space.build_supernet()
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return net.eval()


def _configs(space: TinyVitSpace, n: int, seed: int = 0) -> list[TinyVitConfig]:
    rng = random.Random(seed)
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(n))]


# --- plain data --------------------------------------------------------------------------------
def test_round_trips(space: TinyVitSpace) -> None:
    for cfg in _configs(space, 200):
        space.validate(cfg)
        assert space.from_json(cfg.to_json()) == cfg
        assert space.decode(space.encode(cfg)) == cfg
        assert space.from_vector(space.to_vector(cfg)) == cfg
        assert hash(cfg) == hash(space.decode(space.encode(cfg)))


def test_genome_format(space: TinyVitSpace) -> None:
    cfg = space.decode("r24-p8-e48-d2-h4.1-m3.2-rk0.5")
    assert (cfg.resolution, cfg.patch_size, cfg.embed_dim, cfg.depth) == (24, 8, 48, 2)
    assert cfg.num_heads == (4, 1) + (1,) * (MAX_DEPTH - 2)
    assert cfg.mlp_ratio == (3, 2) + (1,) * (MAX_DEPTH - 2)
    assert cfg.rank_ratio == 0.5
    assert cfg.in_channels == space.in_channels and cfg.num_classes == 10
    assert space.encode(space.largest()) == "r32-p4-e96-d4-h4.4.4.4-m4.4.4.4-rk1.0"
    assert space.encode(space.smallest()) == "r16-p8-e32-d1-h1-m1-rk0.25"
    # rank ratio 1 and 1.0 are the same config
    assert space.decode("r16-p8-e32-d1-h1-m1-rk1") == space.decode("r16-p8-e32-d1-h1-m1-rk1.0")


def test_sample_is_deterministic_and_covers_choices(space: TinyVitSpace) -> None:
    first = _configs(space, 50, seed=7)
    assert first == _configs(space, 50, seed=7)
    seen = {(c.resolution, c.patch_size) for c in _configs(space, 200)}
    assert len(seen) == 6


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("resolution", 20, r"resolution=20: expected one of \(16, 24, 32\)"),
        ("patch_size", 2, r"patch_size=2"),
        ("embed_dim", 40, r"embed_dim=40"),
        ("depth", 5, r"depth=5"),
        ("depth", True, r"depth=True"),
        ("num_heads", (3, 1, 1, 1), r"num_heads\[0\]=3: expected one of \(1, 2, 4\)"),
        ("num_heads", (1, 1), r"num_heads=\(1, 1\): expected a tuple of 4"),
        ("num_heads", [1, 1, 1, 1], r"num_heads=\[1, 1, 1, 1\]"),
        ("mlp_ratio", (1, 1, 1, 4), r"mlp_ratio\[3\]=4: block 3 is beyond depth=1"),
        ("rank_ratio", 0.3, r"rank_ratio=0.3"),
        ("num_classes", 5, r"num_classes=5"),
        ("in_channels", 2, r"in_channels=2"),
    ],
)
def test_validation_names_the_bad_field(
    space: TinyVitSpace, field: str, value: object, message: str
) -> None:
    cfg = dataclasses.replace(space.smallest(), **{field: value})
    with pytest.raises(ConfigError, match=message):
        space.validate(cfg)


def test_from_dict_errors(space: TinyVitSpace) -> None:
    data = space.smallest().to_dict()
    with pytest.raises(ConfigError, match="unknown config field"):
        space.from_dict({**data, "width": 3})
    with pytest.raises(ConfigError, match="missing config field"):
        space.from_dict({k: v for k, v in data.items() if k != "depth"})
    with pytest.raises(ConfigError, match="embed_dim=33"):
        space.from_dict({**data, "embed_dim": 33})
    with pytest.raises(ConfigError, match="space 'tiny-cnn'"):
        space.from_dict({**data, "space": "tiny-cnn"})
    # a hand-written integer rank ratio means the same config as the float
    assert space.from_dict({**data, "rank_ratio": 1}) == space.decode("r16-p8-e32-d1-h1-m1-rk1.0")
    assert isinstance(space.from_dict({**data, "rank_ratio": 1}).rank_ratio, float)


@pytest.mark.parametrize(
    ("genome", "message"),
    [
        ("r20-p8-e32-d1-h1-m1-rk0.25", r"token 'r20': resolution value '20' not in"),
        ("r16-p8-e32-d1-h1-m1-rk0.3", r"token 'rk0.3': rank_ratio"),
        ("r16-p8-e32-d1-h3-m1-rk0.25", r"token 'h3': num_heads value '3' not in \(1, 2, 4\)"),
        ("r16-p8-e32-d1-h1-mx-rk0.25", r"token 'mx': mlp_ratio value 'x'"),
        ("r16-p8-e32-d1-h1-m1-rk0.25-z3", r"token 'z3': expected a prefix"),
        ("r16-p8-e32-d1-h1-m1", r"missing token\(s\) \['rk'\]"),
        ("r16-r16-p8-e32-d1-h1-m1-rk0.25", r"token 'r16': resolution given twice"),
        ("r16-p8-e32-d2-h1-m1.1-rk0.25", r"num_heads lists 1 blocks, expected depth=2"),
        ("", r"token ''"),
    ],
)
def test_decode_errors_name_the_token(space: TinyVitSpace, genome: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space.decode(genome)


def test_any_in_bounds_vector_is_valid(space: TinyVitSpace) -> None:
    bounds = space.vector_bounds()
    assert len(bounds) == 4 + 2 * MAX_DEPTH + 1
    rng = random.Random(1)
    vectors = [[0] * len(bounds), [b - 1 for b in bounds]]
    vectors += [[rng.randrange(b) for b in bounds] for _ in range(500)]
    for vec in vectors:
        cfg = space.from_vector(vec)
        space.validate(cfg)
        # genes of truncated blocks are ignored, so only the active part must survive
        assert space.from_vector(space.to_vector(cfg)) == cfg
    assert space.from_vector([b - 1 for b in bounds]) == dataclasses.replace(
        space.largest(), patch_size=8
    )
    with pytest.raises(ConfigError, match=r"gene resolution=3: expected an index in \[0, 2\]"):
        space.from_vector([3] + [0] * (len(bounds) - 1))
    with pytest.raises(ConfigError, match="expected 13 genes"):
        space.from_vector([0] * 3)


def test_projection_rank_and_storage() -> None:
    assert projection_rank(0.25, 48, 192) == 12
    assert projection_rank(0.75, 48, 64) == 36
    assert projection_rank(0.25, 1, 8) == 1
    for in_f in (16, 32, 48, 64, 96, 384):
        for out_f in (16, 32, 48, 64, 96, 384):
            full = projection_rank(1.0, in_f, out_f)
            assert full == min(in_f, out_f) and not is_factorised(full, in_f, out_f)
    assert is_factorised(projection_rank(0.25, 96, 96), 96, 96)
    assert not is_factorised(projection_rank(0.5, 96, 96), 96, 96)  # equal size: stay dense


# --- layer plan and counts ---------------------------------------------------------------------
def test_layer_plan_is_well_formed(space: TinyVitSpace) -> None:
    for cfg in _configs(space, 30):
        ops = layer_plan(cfg)
        names = [op.name for op in ops]
        assert len(names) == len(set(names))
        produced = {"input"}
        for op in ops:
            assert op.op in OP_KINDS
            assert set(op.inputs) <= produced, op
            produced.add(op.name)
        assert ops[-1].out_shape == (cfg.num_classes,)
        transposes = sum(op.op == "transpose" for op in ops)
        assert transposes == 4 * sum(h > 1 for h in cfg.num_heads[: cfg.depth])


def test_counts_match_flop_counter_and_numel(
    space: TinyVitSpace, supernet: TinyVitSupernet
) -> None:
    for cfg in _configs(space, 14, seed=3):
        net = space.extract(supernet, cfg)
        x = torch.rand(1, *reversed(space.input_shape(cfg)))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x)
        counts = space.count(cfg)
        assert counts.macs == counter.get_total_flops() // 2, space.encode(cfg)
        assert counts.params == sum(p.numel() for p in net.parameters()), space.encode(cfg)
        # every op with weights names the module (or parameter) that holds exactly them
        for op in layer_plan(cfg):
            if op.params:
                holder = net.get_parameter(op.name) if op.name == "pos_embed" else None
                size = (
                    holder.numel()
                    if holder is not None
                    else sum(p.numel() for p in net.get_submodule(op.name).parameters())
                )
                assert size == op.params, op.name


def test_sizes_are_mcu_sized() -> None:
    rgb = TinyVitSpace(num_classes=10, in_channels=3)
    assert rgb.count(rgb.largest()).params < 500_000
    assert rgb.count(rgb.smallest()).params < 10_000


# --- supernet and extraction ------------------------------------------------------------------
def test_extraction_equals_supernet(space: TinyVitSpace, supernet: TinyVitSupernet) -> None:
    torch.manual_seed(1)
    for cfg in _configs(space, 12, seed=5):
        supernet.set_active(cfg)
        assert supernet.active == cfg
        net = space.extract(supernet, cfg).eval()
        x = torch.rand(3, cfg.in_channels, cfg.resolution, cfg.resolution)
        with torch.no_grad():
            diff = (supernet(x) - net(x)).abs().max().item()
        assert diff <= 1e-5, (space.encode(cfg), diff)


def test_extracted_weights_are_copies(space: TinyVitSpace) -> None:
    supernet = space.build_supernet().eval()
    cfg = space.largest()
    net = space.extract(supernet, cfg).eval()
    x = torch.rand(2, cfg.in_channels, cfg.resolution, cfg.resolution)
    with torch.no_grad():
        before = net(x)
        for param in supernet.parameters():
            param.add_(1.0)
        assert torch.equal(net(x), before)


def test_extracted_names_are_systematic(space: TinyVitSpace, supernet: TinyVitSupernet) -> None:
    cfg = space.decode("r16-p4-e64-d2-h2.1-m2.3-rk0.25")
    names = {name for name, _ in space.extract(supernet, cfg).named_parameters()}
    assert {"patch_embed.weight", "pos_embed", "norm.weight", "head.bias"} <= names
    assert {"blocks.1.attn.q.0.weight", "blocks.1.attn.q.1.weight", "blocks.1.attn.q.1.bias"} <= (
        names
    )
    assert "blocks.0.mlp.fc1.1.weight" in names
    dense = space.decode("r16-p4-e64-d2-h2.1-m2.3-rk1.0")
    names = {name for name, _ in space.extract(supernet, dense).named_parameters()}
    assert {"blocks.1.attn.q.weight", "blocks.1.mlp.fc2.bias"} <= names


def test_supernet_rejects_wrong_input_and_config(
    space: TinyVitSpace, supernet: TinyVitSupernet
) -> None:
    cfg = space.smallest()
    supernet.set_active(cfg)
    with pytest.raises(ConfigError, match=r"expected \(N, \d, 16, 16\)"):
        supernet(torch.rand(1, space.in_channels, 32, 32))
    x = prepare_input(torch.rand(2, space.in_channels, 8, 8), cfg)
    assert x.shape == (2, space.in_channels, 16, 16)
    assert supernet(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="embed_dim=40"):
        supernet.set_active(dataclasses.replace(cfg, embed_dim=40))
    with pytest.raises(ConfigError, match="num_classes=3"):
        supernet.set_active(TinyVitSpace(3, space.in_channels).smallest())


def test_patch_embedding_resize_keeps_smooth_images(supernet: TinyVitSupernet) -> None:
    # A constant image gives the same token at every patch size, and a small-patch token equals
    # the large-patch token of the same content upsampled (PI-resize is exact there).
    cfg = dataclasses.replace(supernet.space.largest(), patch_size=8)
    big, bias = supernet.patch_embedding(cfg)
    small, _ = supernet.patch_embedding(dataclasses.replace(cfg, patch_size=4))
    assert small.shape[-1] == 4 and big.shape[-1] == 8
    channels = big.shape[1]
    with torch.no_grad():
        image = torch.full((1, channels, 32, 32), 0.7)
        tokens_big = F.conv2d(image, big, bias, stride=8)
        tokens_small = F.conv2d(image, small, bias, stride=4)
        torch.testing.assert_close(tokens_small[..., :4, :4], tokens_big, rtol=0, atol=1e-5)
        patch = torch.rand(5, channels, 4, 4)
        upsampled = F.interpolate(patch, scale_factor=2, mode="nearest")
        torch.testing.assert_close(
            F.conv2d(patch, small, bias), F.conv2d(upsampled, big, bias), rtol=0, atol=1e-5
        )
    # the resize is linear in the kernel, so gradients reach the shared 8x8 kernel
    kernel = torch.randn(3, 2, 8, 8, requires_grad=True)
    pi_resize(kernel, 4).sum().backward()
    assert kernel.grad is not None and torch.isfinite(kernel.grad).all()


def test_no_gelu_and_only_plain_layers(space: TinyVitSpace, supernet: TinyVitSupernet) -> None:
    class RecordOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.add(str(func))
            return func(*args, **(kwargs or {}))

    plain = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.Hardswish, nn.Sequential, nn.ModuleList)
    for cfg in (space.largest(), space.decode("r24-p8-e48-d2-h1.2-m1.2-rk0.25")):
        supernet.set_active(cfg)
        net = space.extract(supernet, cfg)
        for module in [*net.modules(), *supernet.modules()]:
            assert not isinstance(module, nn.GELU)
        for module in net.modules():
            own = not isinstance(module, plain) and type(module).__module__.startswith("torch")
            assert not own, type(module)
        recorder = RecordOps()
        x = torch.rand(1, cfg.in_channels, cfg.resolution, cfg.resolution)
        with recorder, torch.no_grad():
            net(x)
            supernet(x)
        assert not [name for name in recorder.names if "gelu" in name]
        assert any("hardswish" in name for name in recorder.names)
