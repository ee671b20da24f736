"""Supernet training (sandwich rule + in-place distillation), one network trained on its own,
evaluation, BatchNorm recalibration and checkpoints. Imports torch: import it lazily from
start-up paths."""

from __future__ import annotations

from edgekit.training.checkpoint import (
    checkpoint_meta,
    load_supernet,
    read_checkpoint,
    save_checkpoint,
)
from edgekit.training.evaluate import (
    batchnorm_layers,
    evaluate,
    prepare_input,
    preserved_buffers,
    recalibrate_bn,
    to_nchw,
)
from edgekit.training.recipes import RECIPES, recipe
from edgekit.training.sampling import FittingSampler, SpaceSampler, SubnetSampler
from edgekit.training.standalone import torch_default_init, train_network, train_subnet
from edgekit.training.supernet import (
    TrainResult,
    TrainSettings,
    limit_threads,
    train_supernet,
    training_device,
)

__all__ = [
    "RECIPES",
    "FittingSampler",
    "SpaceSampler",
    "SubnetSampler",
    "TrainResult",
    "TrainSettings",
    "batchnorm_layers",
    "checkpoint_meta",
    "evaluate",
    "limit_threads",
    "load_supernet",
    "prepare_input",
    "preserved_buffers",
    "read_checkpoint",
    "recalibrate_bn",
    "recipe",
    "save_checkpoint",
    "to_nchw",
    "torch_default_init",
    "train_network",
    "train_subnet",
    "train_supernet",
    "training_device",
]
