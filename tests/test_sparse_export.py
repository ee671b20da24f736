"""XNNPACK sparse export: block pruning, the sparse float32 conversion and its checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.data import load_dataset
from edgekit.export import ExportError, SparseSettings, check_xnnpack_sparse, export_sparse
from edgekit.export._sparse_net import (
    XnnpackCnn,
    block_mask,
    block_structure_ok,
    cubic_sparsity,
    fold_batchnorm,
    prune_finetune,
    zero_fraction,
)
from edgekit.export._sparse_tf import build_graph, convert_float, inspect_model, litert_logits
from edgekit.spaces import get_space

torch.set_num_threads(1)

# Low-rank 1x1 convs, residuals and a 5x5 depthwise kernel: everything XNNPACK's sparse path
# accepts.
GENOME = "r24-w0.35-rk0.5-p1-k3.35.3.3-e2.22.2.2"


@pytest.fixture(scope="module")
def space():
    return get_space("tiny-cnn", num_classes=10, in_channels=1)


def _pruned_net(space, sparsity: float, block: tuple[int, int]) -> XnnpackCnn:
    torch.manual_seed(0)
    net = XnnpackCnn(space.decode(GENOME)).eval()
    with torch.no_grad():
        for unit in net.units:
            unit[-1].bias.normal_(0.0, 0.1)
        for weight in net.pointwise_weights().values():
            weight.mul_(block_mask(weight, sparsity, block))
    return net


@pytest.mark.parametrize("block", [(4, 1), (1, 4)])
@pytest.mark.parametrize("sparsity", [0.7, 0.8, 0.9])
def test_block_mask_reaches_sparsity_in_blocks(block, sparsity):
    weight = torch.randn(32, 24, 1, 1)
    mask = block_mask(weight, sparsity, block)
    assert abs(float((mask == 0).float().mean()) - sparsity) < 0.01
    assert block_structure_ok(weight * mask, block)
    rows, cols = block
    grid = mask.reshape(32 // rows, rows, 24 // cols, cols)
    assert torch.equal(grid.amin(dim=(1, 3)), grid.amax(dim=(1, 3)))  # constant per block
    # the largest block survives, the smallest goes
    scores = weight.reshape(32 // rows, rows, 24 // cols, cols).square().sum(dim=(1, 3))
    kept = grid.amax(dim=(1, 3))
    assert kept.flatten()[scores.argmax()] == 1 and kept.flatten()[scores.argmin()] == 0


def test_block_mask_edge_blocks_and_bad_arguments():
    weight = torch.randn(10, 6, 1, 1)  # 10 output channels: the last 4x1 block has 2 rows
    assert block_structure_ok(weight * block_mask(weight, 0.75, (4, 1)), (4, 1))
    with pytest.raises(ExportError, match="block="):
        block_mask(weight, 0.8, (2, 2))
    with pytest.raises(ExportError, match="sparsity="):
        block_mask(weight, 1.0, (4, 1))


def test_cubic_schedule():
    assert cubic_sparsity(0, 100, 0.9) == 0.0
    assert cubic_sparsity(100, 100, 0.9) == 0.9
    values = [cubic_sparsity(step, 100, 0.9) for step in range(101)]
    assert values == sorted(values)


@pytest.mark.parametrize("block", [(4, 1), (1, 4)])
def test_prune_finetune_reaches_target_with_block_shape(space, block):
    net = XnnpackCnn(space.decode(GENOME), batchnorm=True)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(32, 3, 24, 24, generator=generator), torch.arange(32) % 10

    def batches(_: torch.Generator):
        for start in range(0, 32, 16):
            yield images[start : start + 16], labels[start : start + 16]

    tuned = prune_finetune(net, batches, sparsity=0.8, block=block, epochs=3, steps_per_epoch=2,
                           prune_every=1)  # fmt: skip
    weights = {name: w.detach() for name, w in tuned.pointwise_weights().items()}
    assert abs(zero_fraction(weights) - 0.8) < 0.03
    for name, weight in weights.items():
        assert block_structure_ok(weight, block), name
        assert zero_fraction({name: weight}) > 2 / 3, name
    assert not tuned.training
    folded = fold_batchnorm(tuned)
    for name, weight in folded.pointwise_weights().items():  # folding keeps the zeros
        assert torch.equal(weight == 0, weights[name] == 0), name
    with torch.no_grad():
        assert torch.allclose(folded(images), tuned(images), atol=1e-5)
    assert zero_fraction({k: v.detach() for k, v in net.pointwise_weights().items()}) == 0.0


def test_sparse_conversion_has_densify_and_matches_pytorch(space):
    net = _pruned_net(space, 0.8, (4, 1))
    model = convert_float(build_graph(net), sparse=True)
    facts = inspect_model(model)
    pointwise = net.pointwise_weights()
    assert facts.densify_ops == len(pointwise) == len(facts.sparse_tensors)
    assert set(facts.op_counts) <= {"PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN",
                                    "FULLY_CONNECTED", "DENSIFY"}  # fmt: skip
    assert facts.op_counts["PAD"] >= 1  # the stem's symmetric padding stays explicit
    for tensor in facts.sparse_tensors:
        assert tensor.stored_values <= 0.25 * tensor.dense_values
    dense = convert_float(build_graph(net), sparse=False)
    assert inspect_model(dense).densify_ops == 0 and len(model) < len(dense)

    images = np.random.default_rng(0).random((4, 24, 24, 3), dtype=np.float32)
    with torch.no_grad():
        reference = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(litert_logits(model, images) - reference).max() <= 1e-4


@pytest.mark.parametrize(
    ("genome", "match"),
    [
        ("r24-w0.35-rk0.5-p1-k7.35.3.3-e2.22.2.2", r"'stages\.0\.0\.dw'.*7x7"),
        ("r24-w0.5-rk1-p2s2-k3.3.3.3-e6.2.2.2", "patch_grid=2"),
        ("r24-st1-w0.5-rk1-p1-k3.3.3.3-e6.2.2.2", r"'stem': a 3x3 stride-1 conv"),
        ("r24-w0.5-rk1-p1-f1-k3.3.3.3-e6.2.2.2", r"'stages\.0\.0\.fused': a dense 3x3 conv"),
    ],
)
def test_noncompliant_configs_raise(space, genome, match):
    with pytest.raises(ExportError, match=match):
        check_xnnpack_sparse(space, space.decode(genome))


def test_other_space_and_settings_raise(space):
    vit = get_space("tiny-vit", num_classes=10, in_channels=1)
    with pytest.raises(ExportError, match="tiny-vit"):
        check_xnnpack_sparse(vit, vit.smallest())
    with pytest.raises(ExportError, match="2/3"):
        SparseSettings(sparsity=0.5).validate()


@pytest.mark.parametrize(("images", "epochs"), [(1258, 50), (10000, 8), (64_000, 8), (1, 1000)])
def test_sparse_finetune_runs_at_least_min_steps(images, epochs):
    assert SparseSettings().epochs_for(images) == epochs


def test_export_sparse_writes_a_verified_bundle(space, tmp_path):
    splits = load_dataset("digits", seed=0, max_per_split=256)
    torch.manual_seed(0)
    supernet = space.build_supernet()
    cfg = space.decode(GENOME)
    result = export_sparse(space, supernet, cfg, splits, tmp_path / "bundle",
                           settings=SparseSettings(sparsity=0.75, epochs=1, min_steps=0),
                           max_test_images=64)  # fmt: skip
    assert result.model_path.name == "model_sparse.tflite" and result.model_path.is_file()
    assert result.zero_fraction > 2 / 3 and result.parity_max_abs_diff <= 1e-4
    assert result.op_counts["DENSIFY"] > 0 and result.model_bytes < result.dense_bytes
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["target"]["tflite_micro"] is False
    assert manifest["input"]["shape"] == [1, 24, 24, 3]
    assert manifest["sparsity"]["block"] == [4, 1]
    assert "LiteRT" in (tmp_path / "bundle" / "report.md").read_text()
