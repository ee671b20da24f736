"""XNNPACK sparse export (``edgekit export --sparse``): a pruned float32 LiteRT bundle.

For application processors (Cortex-A class) running LiteRT, not microcontrollers: TFLite Micro
has no sparse kernels. The subnet's 1x1 conv weights are pruned block-wise to a target sparsity
while it is fine-tuned on the training split, and the result is converted to float32 with
TFLite's sparse tensor format (DENSIFY ops), which is what makes LiteRT's XNNPACK delegate ask
XNNPACK for sparse inference.

XNNPACK's sparse inference (its NCHW rewrite) runs only when the whole network between the
first conv and the global mean is NCHW-compatible, and these rules follow from it:

- the first op is a 3x3 stride-2 conv with 3 input channels and padding 1 on every side (a grey
  stem is spread over 3 channels; the input is the grey image repeated);
- inside: 1x1 convs (stride 1, no padding), 3x3 / 5x5 depthwise convs with stride 1 or 2 and
  symmetric padding ``kernel // 2``, residual ADDs, ReLU6 (fused); it ends at the global mean;
- the 1x1 conv weights together hold more than 2/3 zeros.

So tiny-cnn configs with 7x7 depthwise kernels or patch-based execution (slices and
concatenations) cannot run sparse, and every conv is re-padded symmetrically (tiny-cnn uses
TensorFlow's asymmetric "SAME"); the fine-tune adapts the weights to that. XNNPACK's sparse
kernels skip zero blocks of 4 output channels (``block=(4, 1)``) on 64-bit Arm and single zeros
elsewhere; on x86 it uses them only on CPUs without AVX.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit.export.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, write_files
from edgekit.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import torch.nn as nn

    from edgekit.data.splits import Splits
    from edgekit.export.pipeline import ProgressCallback
    from edgekit.profiles import DeviceProfile
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

SPARSE_MODEL_FILE = "model_sparse.tflite"
XNNPACK_MIN_ZERO_FRACTION = 2 / 3  # XNNPACK needs strictly more zeros in its 1x1 conv weights
XNNPACK_DEPTHWISE_KERNELS = (3, 5)
PARITY_TOLERANCE = 1e-4  # LiteRT vs PyTorch logits, absolute
_PARITY_IMAGES = 16
_WARN_ACCURACY_LOSS = 0.05  # pruning may cost a little; warn when it costs more


@dataclass(frozen=True)
class SparseSettings:
    """Pruning and fine-tuning settings: ``sparsity`` is the fraction of 1x1 conv weight blocks
    zeroed (above 2/3 for XNNPACK), ``block`` = (output channels, input channels) per block.
    The fine-tune runs ``epochs`` epochs, more when that is fewer than ``min_steps`` optimizer
    steps (see :meth:`epochs_for`)."""

    sparsity: float = 0.8
    block: tuple[int, int] = (4, 1)
    epochs: int = 8
    lr: float = 1e-3
    batch_size: int = 64
    # Eight epochs of a small dataset are too few steps to recover from pruning: on digits
    # (20 batches an epoch) a width-0.35 subnet (69% as inherited) reached 65% after 160
    # steps, 90% after 600 and 95% after 1,000.
    min_steps: int = 1000

    def epochs_for(self, train_images: int) -> int:
        """Fine-tuning epochs over ``train_images`` images: ``epochs``, or enough epochs for
        ``min_steps`` optimizer steps."""
        steps_per_epoch = max(1, -(-train_images // self.batch_size))
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    def validate(self) -> None:
        from edgekit.export._sparse_net import BLOCK_SHAPES

        if not XNNPACK_MIN_ZERO_FRACTION < self.sparsity < 1.0:
            raise ExportError(
                f"sparsity={self.sparsity!r}: XNNPACK runs sparse only with more than 2/3 "
                "zeros in the 1x1 conv weights; expected a fraction in (0.667, 1)"
            )
        if tuple(self.block) not in BLOCK_SHAPES:
            raise ExportError(f"block={self.block!r}: expected one of {BLOCK_SHAPES}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.min_steps < 0:
            raise ExportError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}, "
                f"min_steps={self.min_steps}: expected positive values (min_steps: 0 or more)"
            )


@dataclass
class SparseExportResult:
    """What ``export_sparse`` produced. Accuracies are fractions on the test split:
    ``source_accuracy`` of the extracted subnet as trained, ``relaid_accuracy`` after
    re-padding for XNNPACK (before fine-tuning), ``torch_accuracy`` of the pruned fine-tuned
    network in PyTorch and ``accuracy`` of the bundled model in LiteRT."""

    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    space: str
    config: ArchConfig
    zero_fraction: float  # of all 1x1 conv weights
    block: tuple[int, int]
    source_accuracy: float
    relaid_accuracy: float
    torch_accuracy: float
    accuracy: float
    model_bytes: int
    dense_bytes: int  # the same weights converted without the sparse format
    parity_max_abs_diff: float
    op_counts: dict[str, int]
    timings: dict[str, float]

    @property
    def model_path(self) -> Path:
        return self.files["model"]


def check_xnnpack_sparse(space: SearchSpace, cfg: ArchConfig) -> None:
    """Raise ExportError, naming the layer and what XNNPACK's sparse path needs, when ``cfg``
    cannot run as XNNPACK sparse inference."""
    if space.name != "tiny-cnn":
        raise ExportError(
            f"sparse export supports the tiny-cnn space, not {space.name!r}: XNNPACK's sparse "
            "path runs conv networks (3x3 stride-2 stem, 1x1 and depthwise convs, global mean)"
        )
    from edgekit.spaces.tiny_cnn import layer_plan

    space.validate(cfg)
    if cfg.patch_grid != 1:
        raise ExportError(
            f"patch_grid={cfg.patch_grid}: patch-based layers (STRIDED_SLICE, CONCATENATION) "
            "are outside XNNPACK's sparse path; expected patch_grid=1"
        )
    layers = layer_plan(cfg)
    stem = layers[0]
    if (stem.op, stem.kernel, stem.stride) != ("conv2d", 3, 2) or cfg.in_channels not in (1, 3):
        raise ExportError(
            f"layer {stem.name!r}: a {stem.kernel}x{stem.kernel} stride-{stem.stride} conv on "
            f"{cfg.in_channels} channel(s); XNNPACK's sparse path starts with a 3x3 stride-2 "
            "conv on 3 channels (1 grey channel is repeated)"
        )
    for layer in layers[1:]:
        if layer.op == "conv2d" and layer.kernel != 1:
            raise ExportError(
                f"layer {layer.name!r}: a dense {layer.kernel}x{layer.kernel} conv (a fused "
                "block); after the stem XNNPACK's sparse path runs only 1x1 and depthwise "
                "convs (choose fused_stages=0)"
            )
        if layer.op == "depthwise_conv2d" and layer.kernel not in XNNPACK_DEPTHWISE_KERNELS:
            raise ExportError(
                f"layer {layer.name!r}: {layer.kernel}x{layer.kernel} depthwise conv; "
                f"XNNPACK's sparse path runs only {XNNPACK_DEPTHWISE_KERNELS} kernels "
                "(choose kernel sizes 3 or 5)"
            )


def _nchw3(images_nhwc: np.ndarray) -> Any:
    """NHWC model inputs as an NCHW torch tensor with 3 channels (grey repeated)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def export_sparse(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    splits: Splits,
    out_dir: str | Path,
    *,
    settings: SparseSettings | None = None,
    board: DeviceProfile | None = None,
    checkpoint_path: str | Path | None = None,
    recalibrate: bool = True,
    max_test_images: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> SparseExportResult:
    """Prune, fine-tune, convert and verify subnet ``cfg`` for XNNPACK sparse inference and
    write ``model_sparse.tflite``, ``manifest.json`` and ``report.md`` to ``out_dir``."""
    import numpy as np
    import torch

    from edgekit.export._sparse_net import (
        accuracy,
        fold_batchnorm,
        from_tiny_cnn,
        prune_finetune,
        zero_fraction,
    )
    from edgekit.export._sparse_tf import (
        build_graph,
        check_sparse_ops,
        convert_float,
        inspect_model,
        litert_logits,
    )
    from edgekit.export.pipeline import extract_subnet, model_inputs

    settings = settings or SparseSettings()
    settings.validate()
    check_xnnpack_sparse(space, cfg)
    if board is not None and board.core.lower().startswith("cortex-m"):
        logger.warning(
            "board %s (%s) runs TFLite Micro, which has no sparse kernels; the sparse bundle "
            "targets LiteRT with XNNPACK on application processors",
            board.name,
            board.core,
        )
    stages = ("extracting subnet", "pruning fine-tune", "conversion and checks", "bundle")

    def stage(status: str) -> None:
        if progress is not None:
            progress(stages.index(status), len(stages), status)

    started = time.perf_counter()
    stage("extracting subnet")
    module = extract_subnet(space, supernet, cfg, splits.train if recalibrate else None, seed)
    count = len(splits.test) if max_test_images is None else min(len(splits.test), max_test_images)
    test_nhwc = model_inputs(space, cfg, splits.test.x[:count])
    test_labels = splits.test.y[:count]
    train_x = _nchw3(model_inputs(space, cfg, splits.train.x))
    train_y = torch.from_numpy(splits.train.y)
    test_x = _nchw3(test_nhwc)
    source_accuracy = accuracy(
        module,
        torch.from_numpy(np.ascontiguousarray(test_nhwc.transpose(0, 3, 1, 2))),
        test_labels,
    )
    net = from_tiny_cnn(module, cfg)
    relaid_accuracy = accuracy(net, test_x, test_labels)

    def batches(generator: torch.Generator) -> Any:
        order = torch.randperm(len(train_y), generator=generator)
        for index in order.split(settings.batch_size):
            if len(index) > 1:
                yield train_x[index], train_y[index]

    stage("pruning fine-tune")
    tune_started = time.perf_counter()
    settings = dataclasses.replace(settings, epochs=settings.epochs_for(len(train_y)))
    tuned = prune_finetune(
        net,
        batches,
        sparsity=settings.sparsity,
        block=tuple(settings.block),
        epochs=settings.epochs,
        steps_per_epoch=-(-len(train_y) // settings.batch_size),
        lr=settings.lr,
        seed=seed,
    )
    tuned = fold_batchnorm(tuned)
    tune_seconds = time.perf_counter() - tune_started
    weights = {name: w.detach() for name, w in tuned.pointwise_weights().items()}
    zeros = zero_fraction(weights)
    if zeros <= XNNPACK_MIN_ZERO_FRACTION:
        raise ExportError(
            f"pruning left {zeros:.1%} zeros in the 1x1 conv weights; XNNPACK needs more "
            "than 2/3 (raise the sparsity)"
        )
    torch_accuracy = accuracy(tuned, test_x, test_labels)
    if torch_accuracy < source_accuracy - _WARN_ACCURACY_LOSS:
        logger.warning(
            "pruning to %.0f%% zeros cost %.1f points of test accuracy (%.2f%% -> %.2f%%); a "
            "lower --sparsity (or more SparseSettings.epochs) keeps more",
            100 * zeros, 100 * (source_accuracy - torch_accuracy), 100 * source_accuracy,
            100 * torch_accuracy,
        )  # fmt: skip

    stage("conversion and checks")
    convert_started = time.perf_counter()
    graph = build_graph(tuned)
    model = convert_float(graph, sparse=True)
    dense_bytes = len(convert_float(graph, sparse=False))
    facts = inspect_model(model)
    check_sparse_ops(facts)
    if facts.densify_ops < len(weights):
        raise ExportError(
            f"the converter stored {facts.densify_ops} of {len(weights)} pruned 1x1 weights in "
            "the sparse format; expected all (each needs >= 30% zeros)"
        )
    test_input = test_x.permute(0, 2, 3, 1).numpy()
    logits = litert_logits(model, test_input)
    with torch.no_grad():
        reference = tuned(test_x[:_PARITY_IMAGES]).numpy()
    parity = float(np.abs(logits[:_PARITY_IMAGES] - reference).max()) if count else 0.0
    if parity > PARITY_TOLERANCE:
        raise ExportError(
            f"float parity check failed: LiteRT and PyTorch logits differ by {parity:.3g} "
            f"(allowed {PARITY_TOLERANCE:g})"
        )
    litert_accuracy = float((logits.argmax(1) == test_labels).mean()) if count else 0.0
    convert_seconds = time.perf_counter() - convert_started

    stage("bundle")
    timings = {
        "finetune": tune_seconds,
        "convert_and_verify": convert_seconds,
        "total": time.perf_counter() - started,
    }
    manifest = _manifest(
        space=space,
        cfg=cfg,
        splits=splits,
        settings=settings,
        model=model,
        dense_bytes=dense_bytes,
        facts=facts,
        weights=weights,
        zeros=zeros,
        board=board,
        checkpoint_path=checkpoint_path,
        test_images=count,
        accuracies={
            "source_fp32_accuracy": source_accuracy,
            "relaid_fp32_accuracy": relaid_accuracy,
            "pruned_fp32_accuracy": torch_accuracy,
            "litert_accuracy": litert_accuracy,
        },
        parity=parity,
        timings=timings,
    )
    files = write_sparse_bundle(out_dir, model, manifest)
    if progress is not None:
        progress(len(stages), len(stages), "done")
    return SparseExportResult(
        out_dir=Path(out_dir),
        files=files,
        manifest=manifest,
        space=space.name,
        config=cfg,
        zero_fraction=zeros,
        block=tuple(settings.block),
        source_accuracy=source_accuracy,
        relaid_accuracy=relaid_accuracy,
        torch_accuracy=torch_accuracy,
        accuracy=litert_accuracy,
        model_bytes=len(model),
        dense_bytes=dense_bytes,
        parity_max_abs_diff=parity,
        op_counts=facts.op_counts,
        timings=timings,
    )


def _manifest(
    *,
    space: SearchSpace,
    cfg: ArchConfig,
    splits: Splits,
    settings: SparseSettings,
    model: bytes,
    dense_bytes: int,
    facts: Any,
    weights: dict[str, Any],
    zeros: float,
    board: DeviceProfile | None,
    checkpoint_path: str | Path | None,
    test_images: int,
    accuracies: dict[str, float],
    parity: float,
    timings: dict[str, float],
) -> dict[str, Any]:
    from edgekit.export._sparse_net import zero_fraction
    from edgekit.export.pipeline import source_record

    height, width, channels = space.input_shape(cfg)
    rows, cols = settings.block
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "edgekit_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": {
            "runtime": "LiteRT (TensorFlow Lite) with the XNNPACK delegate",
            "inference": "float32, XNNPACK sparse inference (NCHW)",
            "tflite_micro": False,
            "notes": "TFLite Micro has no sparse kernels. XNNPACK runs the 1x1 convs sparse on "
            "Arm and on x86 CPUs without AVX; elsewhere the model runs dense.",
        },
        "model": {
            "file": SPARSE_MODEL_FILE,
            "sha256": hashlib.sha256(model).hexdigest(),
            "bytes": len(model),
            "dense_bytes": dense_bytes,
        },
        "input": {
            "shape": [1, height, width, 3],
            "dtype": "float32",
            "layout": "NHWC",
            "preprocessing": f"resize to {height}x{width} (bilinear), float in [0, 1]"
            + (", the grey channel repeated 3 times" if channels == 1 else ""),
        },
        "output": {
            "shape": [1, cfg.num_classes],
            "dtype": "float32",
            "meaning": "class logits; arg-max is the label",
        },
        "labels": list(splits.classes),
        "op_counts": facts.op_counts,
        "sparsity": {
            "target": settings.sparsity,
            "block": [rows, cols],
            "block_meaning": f"{rows} output channel(s) x {cols} input channel(s) of a 1x1 conv",
            "pointwise_zero_fraction": zeros,
            "per_layer_zero_fraction": {
                name: zero_fraction({name: w}) for name, w in weights.items()
            },
            "sparse_tensors": len(facts.sparse_tensors),
            "densify_ops": facts.densify_ops,
            "layout": "every conv padded symmetrically by kernel // 2 (explicit PAD), stem on "
            "3 channels, BatchNorm folded",
        },
        "board": None if board is None else {"name": board.name, "core": board.core},
        "source": source_record(space, cfg, checkpoint_path),
        "finetune": {
            "epochs": settings.epochs,
            "lr": settings.lr,
            "batch_size": settings.batch_size,
            "schedule": "cubic sparsity ramp over "
            "60% of the steps, masks re-applied every step, cosine learning rate",
        },
        "verification": {
            "dataset": splits.name,
            "test_images": test_images,
            **accuracies,
            "litert_vs_pytorch_max_abs_diff": parity,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def _report(manifest: dict[str, Any]) -> str:
    from edgekit.units import format_size

    source, check, sparsity = manifest["source"], manifest["verification"], manifest["sparsity"]
    model, target = manifest["model"], manifest["target"]
    lines = [
        f"# {source['space']} `{source['genome']}` (XNNPACK sparse, float32)",
        "",
        f"- {model['file']}: {format_size(model['bytes'])} ({model['bytes']} B); the same "
        f"weights stored dense: {format_size(model['dense_bytes'])}",
        f"- 1x1 conv weights: {sparsity['pointwise_zero_fraction']:.1%} zeros in "
        f"{sparsity['block'][0]}x{sparsity['block'][1]} blocks; {sparsity['densify_ops']} "
        "sparse tensors behind DENSIFY",
        "- ops: " + ", ".join(f"{op} x{n}" for op, n in manifest["op_counts"].items()),
        f"- accuracy on {check['test_images']} {check['dataset']} test images: as trained "
        f"{check['source_fp32_accuracy']:.2%}, re-padded {check['relaid_fp32_accuracy']:.2%}"
        f", pruned and fine-tuned {check['pruned_fp32_accuracy']:.2%} (PyTorch), "
        f"{check['litert_accuracy']:.2%} (LiteRT)",
        f"- LiteRT vs PyTorch logits: max |diff| {check['litert_vs_pytorch_max_abs_diff']:.2e}",
        f"- target: {target['runtime']}; {target['notes']}",
    ]
    return "\n".join(lines) + "\n"


def write_sparse_bundle(
    out_dir: str | Path, model: bytes, manifest: dict[str, Any]
) -> dict[str, Path]:
    """Write ``model_sparse.tflite``, ``manifest.json`` and ``report.md`` into ``out_dir``;
    returns their paths by role (``model``, ``manifest``, ``report``)."""
    return write_files(
        out_dir,
        {
            "model": (SPARSE_MODEL_FILE, model),
            "manifest": ("manifest.json", json.dumps(manifest, indent=2) + "\n"),
            "report": ("report.md", _report(manifest)),
        },
    )
