"""Weight-shared supernet training: the sandwich rule with in-place distillation (BigNAS).

Each step runs the largest subnet on the hard labels, then the smallest and ``num_random``
random subnets on the largest's detached soft predictions (mixed with a little of the hard
labels), accumulates all gradients and takes one optimizer step. Every subnet sees the batch
resized to its own resolution. The BatchNorm running statistics follow the largest subnet only;
every other subnet needs ``recalibrate_bn`` before its accuracy means anything.

Which subnets count as largest, smallest and random is a ``SubnetSampler``'s choice
(``edgekit.training.sampling``): the whole space by default, or only the configs that fit a
board's budgets.

Two knobs beyond BigNAS fit short CPU budgets: ``smallest_weight`` scales the smallest
subnet's loss (the shared weights otherwise drift towards what the big subnets need, and the
smallest pays most), and ``distill_warmup_epochs`` ramps distillation in from hard labels (an
untrained teacher's near-uniform predictions otherwise hold every subnet back, which slows
transformers most).

Every random choice (batch order, augmentation, sampled subnets) is derived from
``(seed, epoch, step)``, so a run resumed from any checkpoint continues exactly as the
uninterrupted run would have (on CPU, with the same thread count).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit import __version__
from edgekit.errors import CheckpointError, ConfigError, DatasetError
from edgekit.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_space,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from edgekit.training.evaluate import evaluate, prepare_input, preserved_buffers, to_nchw
from edgekit.training.sampling import SpaceSampler, SubnetSampler

if TYPE_CHECKING:
    from edgekit.data.splits import Splits
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]

# Hyper-parameters that may change when a run is resumed; all others must match.
_RESUMABLE_CHANGES = frozenset({"epochs", "checkpoint_every", "val_samples"})


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one supernet training run (stored in its checkpoint)."""

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    num_random: int = 2
    optimizer: str = "adamw"  # "adamw" or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 0.05  # not applied to biases and normalisation weights
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine schedule ends at lr * min_lr_ratio
    label_smoothing: float = 0.1  # largest subnet's hard-label loss
    distill_weight: float = 0.9  # other subnets: weight of soft-CE to the largest vs hard labels
    distill_warmup_epochs: float = 0.0  # ramp distill_weight up from 0 (a poor early teacher)
    smallest_weight: float = 1.0  # loss multiplier of the smallest subnet; 0: not sandwiched
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    shift: int = 1  # random translation in pixels at the dataset's resolution; 0 disables
    hflip: bool = False  # random horizontal flips (natural images, not digits)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch; 0: epochs only
    val_samples: int = 2000  # validation images per end-of-epoch evaluation
    recalibrate_batches: int = 10  # BatchNorm recalibration batches for validation

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected a positive number")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size!r}: expected at least 2")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer={self.optimizer!r}: expected 'adamw' or 'sgd'")
        if self.num_random < 0 or self.shift < 0 or self.checkpoint_every < 0:
            raise ConfigError("num_random, shift and checkpoint_every must be >= 0")
        if self.smallest_weight < 0 or self.distill_warmup_epochs < 0:
            raise ConfigError("smallest_weight and distill_warmup_epochs must be >= 0")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight={self.distill_weight!r}: expected 0..1")


@dataclass
class TrainResult:
    """What ``train_supernet`` returns; ``history`` has one dict per completed epoch."""

    space: SearchSpace
    supernet: nn.Module
    settings: TrainSettings
    checkpoint_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_completed: int = 0
    resumed_from_epoch: int | None = None
    wall_seconds: float = 0.0


def derived_seed(seed: int, *keys: int) -> int:
    """A well-mixed 32-bit seed for the stream named by ``keys`` under ``seed``."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def training_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here; a ConfigError naming it otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from e
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: no CUDA GPU is available on this machine")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return parsed


def make_optimizer(module: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """``settings``' optimizer over ``module``'s trainable parameters; weight decay spares
    biases and normalisation weights (every parameter of one dimension or less)."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, nesterov=True)


def lr_factor(step: int, settings: TrainSettings, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine down to
    ``settings.min_lr_ratio`` at the last step."""
    total = max(1, settings.epochs * steps_per_epoch)
    warmup = min(total - 1, round(settings.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    low = settings.min_lr_ratio
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


def limit_threads(num_threads: int | None = None) -> int:
    """Cap torch's intra-op threads at the CPU cores this process may use (or ``num_threads``)."""
    available = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    threads = num_threads or min(torch.get_num_threads(), available or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def train_supernet(
    space: SearchSpace,
    splits: Splits,
    *,
    epochs: int,
    checkpoint_path: str | os.PathLike[str],
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    resume: bool = False,
    num_random: int = 2,
    progress: ProgressCallback | None = None,
    num_threads: int | None = None,
    sampler: SubnetSampler | None = None,
    device: str | torch.device = "cpu",
    **options: Any,
) -> TrainResult:
    """Train ``space``'s supernet on ``splits.train`` and checkpoint it after every epoch.

    ``options`` are further ``TrainSettings`` fields (optimizer, weight_decay, shift, hflip,
    checkpoint_every, ...). With ``resume=True`` and an existing checkpoint, training continues
    from it (only ``epochs``, ``checkpoint_every`` and ``val_samples`` may differ from the
    saved settings; a larger ``epochs`` stretches the remaining cosine schedule); without a
    checkpoint it starts afresh. ``progress(done_steps, total_steps, status)`` is called after
    every step. ``sampler`` picks the subnets each step trains (default: the whole space;
    :class:`~edgekit.training.sampling.FittingSampler` trains only those that fit a budget);
    a run resumes only with the same one. ``device`` ("cpu", "cuda", ...) is where the supernet
    trains and where the returned one lives; a checkpoint resumes on any device.
    """
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(TrainSettings)})
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}")
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        num_random=num_random,
        **options,
    )
    check_data(space, splits)
    limit_threads(num_threads)
    sampler = sampler or SpaceSampler(space)
    trainer = _Trainer(space, splits, settings, sampler, Path(checkpoint_path), progress,
                       training_device(device))  # fmt: skip
    return trainer.run(resume)


def check_data(space: SearchSpace, splits: Splits) -> None:
    if splits.num_classes != space.num_classes:
        raise DatasetError(
            f"dataset {splits.name!r} has {splits.num_classes} classes but the space was built "
            f"for num_classes={space.num_classes}"
        )
    channels = splits.input_shape[2]
    if channels != space.in_channels:
        raise DatasetError(
            f"dataset {splits.name!r} has {channels} channel(s) but the space was built for "
            f"in_channels={space.in_channels}"
        )
    if len(splits.train) < 2:
        raise DatasetError(f"dataset {splits.name!r} has {len(splits.train)} training images")


def _soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class _Trainer:
    def __init__(
        self,
        space: SearchSpace,
        splits: Splits,
        settings: TrainSettings,
        sampler: SubnetSampler,
        path: Path,
        progress: ProgressCallback | None,
        device: torch.device,
    ) -> None:
        self.space = space
        self.device = device
        self.sampler = sampler
        self.splits = splits
        self.settings = settings
        self.path = path
        self.progress = progress
        self.train_x = to_nchw(splits.train.x).to(device)
        self.train_y = torch.from_numpy(splits.train.y).to(device)
        self.steps_per_epoch = len(self._batches(0))
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.loss_sum = 0.0
        self.loss_count = 0

    # --- set-up -----------------------------------------------------------------------------
    def _build(self) -> None:
        s = self.settings
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        np.random.seed(s.seed % 2**32)
        self.supernet = self.space.build_supernet().to(self.device)
        self.optimizer = make_optimizer(self.supernet, s)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, s, self.steps_per_epoch)
        )

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """The batch indices of ``epoch``: a seeded permutation; a 1-image tail is dropped."""
        generator = torch.Generator().manual_seed(derived_seed(self.settings.seed, 0, epoch))
        order = torch.randperm(len(self.train_y), generator=generator)
        batches = list(order.split(self.settings.batch_size))
        return [b for b in batches if len(b) >= 2]

    # --- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "edgekit_version": __version__,
            "torch_version": str(torch.__version__),
            "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "space": self.space.name,
            "num_classes": self.space.num_classes,
            "in_channels": self.space.in_channels,
            "settings": dataclasses.asdict(self.settings),
            "subnets": self.sampler.describe(),
            "data": {
                "name": self.splits.name,
                "source": self.splits.source,
                "input_shape": list(self.splits.input_shape),
                "train_size": len(self.splits.train),
            },
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.epoch * self.steps_per_epoch + self.step_in_epoch,
            "complete": self.epoch >= self.settings.epochs,
            "history": list(self.history),
            "partial": {"loss_sum": self.loss_sum, "loss_count": self.loss_count},
            # On the CPU, so that a GPU-trained checkpoint loads on any machine.
            "supernet": _on_cpu(self.supernet.state_dict()),
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
                "torch": torch.get_rng_state(),
            },
        }

    def _save(self) -> None:
        save_checkpoint(self._payload(), self.path)
        logger.debug(
            "checkpoint %s at epoch %d step %d", self.path, self.epoch, self.step_in_epoch
        )

    def _restore(self) -> None:
        payload = read_checkpoint(self.path)
        check_space(payload, self.space, self.path)
        saved = payload.get("settings", {})
        current = dataclasses.asdict(self.settings)
        for key, value in current.items():
            if key not in _RESUMABLE_CHANGES and saved.get(key) != value:
                raise CheckpointError(
                    f"checkpoint {str(self.path)!r} was trained with {key}={saved.get(key)!r}, "
                    f"got {key}={value!r}; use the same settings to resume"
                )
        # Checkpoints from before samplers trained the whole space.
        saved_subnets = payload.get("subnets", {"kind": "space"})
        if saved_subnets != self.sampler.describe():
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} trained the subnets {saved_subnets}, got "
                f"{self.sampler.describe()}; use the same subnets (budget) to resume"
            )
        data_name = payload.get("data", {}).get("name")
        if data_name != self.splits.name:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} was trained on dataset {data_name!r}, "
                f"got {self.splits.name!r}"
            )
        if payload.get("data", {}).get("train_size") != len(self.splits.train):
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} was trained on "
                f"{payload['data'].get('train_size')} images, got {len(self.splits.train)}"
            )
        load_state(self.supernet, payload["supernet"], self.path)
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            rng = payload["rng"]
            random.setstate(_as_python_state(rng["python"]))
            name, key, *rest = rng["numpy"]
            np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
            torch.set_rng_state(rng["torch"])
            self.epoch = int(payload["epoch"])
            self.step_in_epoch = int(payload["step_in_epoch"])
            self.history = list(payload["history"])
            self.loss_sum = float(payload["partial"]["loss_sum"])
            self.loss_count = int(payload["partial"]["loss_count"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {str(self.path)!r} is damaged: {e}") from e

    # --- training ----------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        started = time.perf_counter()
        self._build()
        resumed_from = None
        if resume and self.path.exists():
            self._restore()
            resumed_from = self.epoch
            logger.info(
                "resuming %s from %s at epoch %d (step %d)",
                self.space.name,
                self.path,
                self.epoch,
                self.step_in_epoch,
            )
        elif resume:
            logger.info("no checkpoint at %s yet: starting afresh", self.path)
        s = self.settings
        total_steps = s.epochs * self.steps_per_epoch
        while self.epoch < s.epochs:
            epoch_started = time.perf_counter()
            batches = self._batches(self.epoch)
            for step in range(self.step_in_epoch, len(batches)):
                loss = self._step(batches[step], self.epoch, step)
                self.loss_sum += loss
                self.loss_count += 1
                self.step_in_epoch = step + 1
                done = self.epoch * self.steps_per_epoch + self.step_in_epoch
                if self.progress is not None:
                    self.progress(
                        done,
                        total_steps,
                        f"epoch {self.epoch + 1}/{s.epochs} "
                        f"loss {self.loss_sum / self.loss_count:.3f}",
                    )
                if (
                    s.checkpoint_every
                    and done % s.checkpoint_every == 0
                    and step + 1 < len(batches)
                ):
                    self._save()
            self._end_epoch(time.perf_counter() - epoch_started)
        return TrainResult(
            space=self.space,
            supernet=self.supernet.eval(),
            settings=self.settings,
            checkpoint_path=self.path,
            history=list(self.history),
            epochs_completed=self.epoch,
            resumed_from_epoch=resumed_from,
            wall_seconds=time.perf_counter() - started,
        )

    def _end_epoch(self, seconds: float) -> None:
        s = self.settings
        val = self.splits.val if len(self.splits.val) else self.splits.test
        metrics: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": self.loss_sum / max(1, self.loss_count),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
        }
        for label, cfg in (("largest", self.sampler.largest), ("smallest", self.sampler.smallest)):
            metrics[f"val_acc_{label}"] = evaluate(
                self.space,
                self.supernet,
                cfg,
                val,
                recalibrate_with=self.splits.train,
                batches=s.recalibrate_batches,
                max_samples=s.val_samples,
                seed=s.seed,
            )
        self.history.append(metrics)
        self.epoch += 1
        self.step_in_epoch = 0
        self.loss_sum, self.loss_count = 0.0, 0
        self._save()
        logger.info(
            "epoch %d/%d: loss %.4f, val acc largest %.4f smallest %.4f (%.1f s)",
            metrics["epoch"],
            s.epochs,
            metrics["train_loss"],
            metrics["val_acc_largest"],
            metrics["val_acc_smallest"],
            seconds,
        )

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = self.settings
        if s.hflip:
            flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if s.shift:
            height, width = x.shape[-2:]
            padded = F.pad(x, (s.shift, s.shift, s.shift, s.shift))
            offsets = torch.randint(0, 2 * s.shift + 1, (len(x), 2), generator=generator)
            x = torch.stack(
                [
                    padded[i, :, dy : dy + height, dx : dx + width]
                    for i, (dy, dx) in enumerate(offsets.tolist())
                ]
            )
        return x

    def _step(self, index: torch.Tensor, epoch: int, step: int) -> float:
        s = self.settings
        generator = torch.Generator().manual_seed(derived_seed(s.seed, 1, epoch, step))
        index = index.to(self.device)
        x = self._augment(self.train_x[index], generator)
        y = self.train_y[index]
        rng = random.Random(derived_seed(s.seed, 2, epoch, step))
        # (subnet, loss weight); with smallest_weight 0 the smallest is trained only when drawn.
        others: list[tuple[ArchConfig, float]] = (
            [(self.sampler.smallest, s.smallest_weight)] if s.smallest_weight else []
        )
        others += [(self.sampler.sample(rng), 1.0) for _ in range(s.num_random)]

        self.supernet.train()
        self.optimizer.zero_grad(set_to_none=True)
        largest = self.sampler.largest
        self.supernet.set_active(largest)
        logits = self.supernet(prepare_input(self.space, x, largest))
        loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(
                f"training diverged (loss {value}) at epoch {epoch + 1} step {step + 1}; "
                f"lower the learning rate (lr={s.lr})"
            )
        loss.backward()
        teacher = logits.detach().softmax(dim=1)
        distill = s.distill_weight
        if s.distill_warmup_epochs > 0:
            done_epochs = epoch + step / self.steps_per_epoch
            distill *= min(1.0, done_epochs / s.distill_warmup_epochs)
        # Only the largest subnet's batches update the running statistics.
        with preserved_buffers(self.supernet):
            for cfg, weight in others:
                self.supernet.set_active(cfg)
                student = self.supernet(prepare_input(self.space, x, cfg))
                sub_loss = distill * _soft_cross_entropy(student, teacher)
                if distill < 1.0:
                    sub_loss = sub_loss + (1 - distill) * F.cross_entropy(student, y)
                (sub_loss * weight).backward()
        if s.grad_clip:
            nn.utils.clip_grad_norm_(self.supernet.parameters(), s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return value


def _on_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(value) for value in state)
    return state


def _as_python_state(state: Any) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
