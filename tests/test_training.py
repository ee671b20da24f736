"""Supernet trainer, checkpoints, evaluation and BatchNorm recalibration.

Uses a tiny toy space defined here (a 1-2 layer CNN with a sliced BatchNorm) so the trainer's
mechanics are tested independently of the real spaces; ``test_spaces_common.py`` trains every
registered space for real.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgekit.spaces as spaces_registry
from edgekit.errors import CheckpointError, ConfigError, DatasetError
from edgekit.spaces import ArchConfig, Counts, SearchSpace
from edgekit.training import (
    FittingSampler,
    SpaceSampler,
    TrainSettings,
    evaluate,
    load_supernet,
    preserved_buffers,
    read_checkpoint,
    recalibrate_bn,
    save_checkpoint,
    train_subnet,
    train_supernet,
)

torch.set_num_threads(1)


# --- a toy space -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig(ArchConfig):
    space: ClassVar[str] = "toy"
    num_classes: int
    in_channels: int
    resolution: int
    width: int
    depth: int


class SlicedBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the first C channels, honouring momentum=None like nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        return F.batch_norm(
            x,
            self.running_mean[:channels],
            self.running_var[:channels],
            self.weight[:channels],
            self.bias[:channels],
            self.training,
            factor,
            self.eps,
        )


class ToyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(in_channels, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)]
        )
        self.bns = nn.ModuleList([SlicedBatchNorm(16), SlicedBatchNorm(16)])
        self.head = nn.Linear(16 * 4, num_classes)
        self._active: ToyConfig | None = None

    def set_active(self, cfg: ToyConfig) -> None:
        self._active = cfg

    @property
    def active(self) -> ToyConfig | None:
        return self._active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._active
        for conv, bn in list(zip(self.convs, self.bns, strict=True))[: cfg.depth]:
            weight = conv.weight[: cfg.width, : x.shape[1]]
            x = F.relu(bn(F.conv2d(x, weight, conv.bias[: cfg.width], padding=1)))
        # 2x2 pooled features are channel-major, so the first width*4 belong to the active channels
        features = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return F.linear(features, self.head.weight[:, : cfg.width * 4], self.head.bias)


class ToySpace(SearchSpace):
    name = "toy"
    config_cls = ToyConfig
    knobs: ClassVar[dict[str, tuple[int, ...]]] = {
        "resolution": (8, 12),
        "width": (8, 16),
        "depth": (1, 2),
    }

    def _make(self, **values: int) -> ToyConfig:
        return ToyConfig(num_classes=self.num_classes, in_channels=self.in_channels, **values)

    def choices(self) -> dict[str, tuple[int, ...]]:
        return dict(self.knobs)

    def sample(self, rng: random.Random) -> ToyConfig:
        return self._make(**{k: rng.choice(v) for k, v in self.knobs.items()})

    def largest(self) -> ToyConfig:
        return self._make(**{k: max(v) for k, v in self.knobs.items()})

    def smallest(self) -> ToyConfig:
        return self._make(**{k: min(v) for k, v in self.knobs.items()})

    def validate(self, cfg: ArchConfig) -> None:
        for key, allowed in self.knobs.items():
            if getattr(cfg, key) not in allowed:
                raise ConfigError(f"{key}={getattr(cfg, key)!r}: expected one of {allowed}")

    def encode(self, cfg: ToyConfig) -> str:
        return f"r{cfg.resolution}-w{cfg.width}-d{cfg.depth}"

    def decode(self, genome: str) -> ToyConfig:
        match = re.fullmatch(r"r(\d+)-w(\d+)-d(\d+)", genome)
        if not match:
            raise ConfigError(f"bad genome {genome!r}")
        r, w, d = map(int, match.groups())
        cfg = self._make(resolution=r, width=w, depth=d)
        self.validate(cfg)
        return cfg

    def count(self, cfg: ToyConfig) -> Counts:
        return Counts(params=0, macs=0)

    def input_shape(self, cfg: ToyConfig) -> tuple[int, int, int]:
        return cfg.resolution, cfg.resolution, self.in_channels

    def build_supernet(self) -> nn.Module:
        return ToyNet(self.num_classes, self.in_channels)

    def extract(self, supernet: nn.Module, cfg: ArchConfig) -> nn.Module:
        raise NotImplementedError


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from edgekit.data import load_dataset

    return load_dataset("digits", seed=0, max_per_split=160)


@pytest.fixture
def toy(monkeypatch) -> ToySpace:
    # Registered for this test only, so load_supernet can rebuild it by name.
    monkeypatch.setitem(spaces_registry._REGISTRY, "toy", ToySpace)
    return ToySpace(num_classes=10, in_channels=1)


SMALL = {"batch_size": 32, "lr": 3e-2, "seed": 0, "recalibrate_batches": 2, "warmup_epochs": 0.2}


def _train(space, splits, path, epochs=2, **kw):
    return train_supernet(space, splits, epochs=epochs, checkpoint_path=path, **{**SMALL, **kw})


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- training ----------------------------------------------------------------------------------
def test_loss_goes_down_and_progress_is_reported(toy, digits, tmp_path):
    calls = []
    result = _train(toy, digits, tmp_path / "s.pt", epochs=4, progress=lambda *a: calls.append(a))
    losses = [h["train_loss"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert losses[-1] < losses[0] - 0.15
    assert result.history[-1]["val_acc_largest"] > 0.3  # chance is 0.1
    assert result.epochs_completed == 4 and result.resumed_from_epoch is None
    steps_per_epoch = 5  # 160 images / batch 32
    assert [c[0] for c in calls] == list(range(1, 4 * steps_per_epoch + 1))
    assert {c[1] for c in calls} == {4 * steps_per_epoch}
    assert calls[-1][2].startswith("epoch 4/4 loss ")


def test_checkpoint_contents_and_load_supernet(toy, digits, tmp_path):
    path = tmp_path / "sub" / "s.pt"
    result = _train(toy, digits, path, epochs=2)
    payload = read_checkpoint(path)
    assert payload["space"] == "toy" and payload["num_classes"] == 10
    assert payload["in_channels"] == 1
    assert payload["epoch"] == 2 and payload["step_in_epoch"] == 0 and payload["complete"]
    assert payload["settings"]["epochs"] == 2 and payload["settings"]["lr"] == 3e-2
    assert payload["data"]["name"] == digits.name
    assert len(payload["history"]) == 2
    assert set(payload["rng"]) == {"python", "numpy", "torch"}
    assert {"optimizer", "scheduler", "supernet"} <= set(payload)
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind

    space, supernet, meta = load_supernet(path)
    assert isinstance(space, ToySpace) and not supernet.training
    assert _same_state(supernet, result.supernet)
    assert meta["epoch"] == 2 and "supernet" not in meta and "optimizer" not in meta


def test_same_seed_same_result_and_other_seed_differs(toy, digits, tmp_path):
    a = _train(toy, digits, tmp_path / "a.pt", epochs=1)
    b = _train(toy, digits, tmp_path / "b.pt", epochs=1)
    c = _train(toy, digits, tmp_path / "c.pt", epochs=1, seed=1)
    assert (
        _same_state(a.supernet, b.supernet)
        and a.history[0]["train_loss"] == b.history[0]["train_loss"]
    )
    assert not _same_state(a.supernet, c.supernet)


class _Crash(Exception):
    pass


def _crash_after(step: int):
    def callback(done: int, total: int, status: str) -> None:
        if done == step:
            raise _Crash

    return callback


@pytest.mark.parametrize(
    ("crash_at", "checkpoint_every", "resumed_epoch", "resumed_step"),
    # 5 steps per epoch: crash in epoch 2, after an epoch checkpoint or a step checkpoint (6)
    [(7, 0, 1, 0), (8, 3, 1, 1)],
)
def test_resume_continues_exactly(
    toy, digits, tmp_path, crash_at, checkpoint_every, resumed_epoch, resumed_step
):
    straight = _train(toy, digits, tmp_path / "straight.pt", epochs=3)
    path = tmp_path / "crashed.pt"
    with pytest.raises(_Crash):
        _train(
            toy,
            digits,
            path,
            epochs=3,
            progress=_crash_after(crash_at),
            checkpoint_every=checkpoint_every,
        )
    saved = read_checkpoint(path)
    assert saved["epoch"] == resumed_epoch and len(saved["history"]) == resumed_epoch
    assert saved["step_in_epoch"] == resumed_step
    resumed = _train(toy, digits, path, epochs=3, resume=True, checkpoint_every=checkpoint_every)
    assert resumed.resumed_from_epoch == resumed_epoch
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert _same_state(resumed.supernet, straight.supernet)
    for got, want in zip(resumed.history, straight.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-12)
        assert got["val_acc_smallest"] == want["val_acc_smallest"]


def test_resume_of_finished_run_and_extension(toy, digits, tmp_path):
    path = tmp_path / "s.pt"
    _train(toy, digits, path, epochs=1)
    again = _train(toy, digits, path, epochs=1, resume=True)
    assert again.epochs_completed == 1 and len(again.history) == 1
    longer = _train(toy, digits, path, epochs=2, resume=True)
    assert [h["epoch"] for h in longer.history] == [1, 2]
    fresh = _train(toy, digits, tmp_path / "new.pt", epochs=1, resume=True)  # nothing to resume
    assert fresh.resumed_from_epoch is None and fresh.epochs_completed == 1


_DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
    ),
]


@pytest.mark.parametrize("device", _DEVICES)
def test_training_on_a_device_evaluates_there_and_resumes_on_the_cpu(
    toy, digits, tmp_path, device
):
    path = tmp_path / "s.pt"
    trained = _train(toy, digits, path, epochs=1, device=device)
    assert {p.device.type for p in trained.supernet.parameters()} == {device}
    accuracy = evaluate(toy, trained.supernet, toy.largest(), digits.val,
                        recalibrate_with=digits.train, batches=2)  # fmt: skip
    assert 0.0 <= accuracy <= 1.0
    saved = torch.load(path, weights_only=True)  # no map_location: it loads anywhere
    assert {t.device.type for t in saved["supernet"].values()} == {"cpu"}
    resumed = _train(toy, digits, path, epochs=2, resume=True)  # the default device: the CPU
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 2
    assert {p.device.type for p in resumed.supernet.parameters()} == {"cpu"}


# --- one network trained on its own ------------------------------------------------------------
@pytest.mark.parametrize("device", _DEVICES)
def test_a_subnet_trained_alone_learns_reproducibly_and_returns_on_the_cpu(toy, digits, device):
    cfg = toy.decode("r12-w16-d2")
    settings = TrainSettings(epochs=8, **SMALL)
    calls = []
    trained = train_subnet(toy, cfg, digits, settings, device=device,
                           progress=lambda *a: calls.append(a))  # fmt: skip
    assert {p.device.type for p in trained.parameters()} == {"cpu"}
    assert trained.active == cfg and not trained.training
    steps = len(digits.train) // settings.batch_size
    assert calls[-1][:2] == (8 * steps, 8 * steps) and "epoch 8/8" in calls[-1][2]
    # Its own BatchNorm statistics serve: no recalibration needed to be well above chance.
    assert evaluate(toy, trained, cfg, digits.val) > 0.5
    if device == "cpu":
        again = train_subnet(toy, cfg, digits, settings)
        other = train_subnet(toy, cfg, digits, TrainSettings(epochs=8, **{**SMALL, "seed": 1}))
        assert _same_state(trained, again) and not _same_state(trained, other)


def test_a_subnet_trained_alone_starts_from_fresh_weights_whatever_the_seed_state(toy, digits):
    cfg = toy.decode("r8-w8-d1")
    settings = TrainSettings(epochs=1, **SMALL)
    first = train_subnet(toy, cfg, digits, settings)
    torch.manual_seed(12345)  # the caller's random state does not leak in
    assert _same_state(first, train_subnet(toy, cfg, digits, settings))
    with pytest.raises(DatasetError):
        train_subnet(ToySpace(num_classes=3, in_channels=1), cfg, digits, settings)


# --- checkpoint errors -------------------------------------------------------------------------
def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_checkpoint_errors(toy, digits, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as e:
        load_supernet(tmp_path / "missing.pt")
    _one_line(e)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="not a readable edgekit checkpoint") as e:
        load_supernet(garbage)
    _one_line(e)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an edgekit supernet checkpoint"):
        load_supernet(foreign)

    path = tmp_path / "toy.pt"
    _train(toy, digits, path, epochs=1)
    other_classes = ToySpace(num_classes=5, in_channels=1)
    with pytest.raises(DatasetError, match="10 classes"):
        _train(other_classes, digits, path, resume=True)
    with pytest.raises(CheckpointError, match=r"lr=0\.03") as e:
        _train(toy, digits, path, epochs=2, resume=True, lr=0.5)
    _one_line(e)

    class OtherSpace(ToySpace):
        name = "other"

    with pytest.raises(CheckpointError, match="space='toy', expected 'other'") as e:
        _train(OtherSpace(), digits, path, epochs=2, resume=True)
    _one_line(e)

    payload = read_checkpoint(path)
    state = payload["supernet"]
    payload["supernet"] = {"head.weight": torch.zeros(2, 2)}
    broken = tmp_path / "broken.pt"
    save_checkpoint(payload, broken)
    with pytest.raises(CheckpointError, match=r"lacks \d+ weight\(s\) .* train the supernet ag"):
        load_supernet(broken)
    payload["supernet"] = {**state, "head.weight": torch.zeros(2, 2)}
    save_checkpoint(payload, broken)
    with pytest.raises(CheckpointError, match="does not match the current supernet") as e:
        load_supernet(broken)
    _one_line(e)
    payload["space"] = "no-such-space"
    save_checkpoint(payload, broken)
    with pytest.raises(CheckpointError, match="no-such-space"):
        load_supernet(broken)


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"value": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_checkpoint({"value": lambda: None}, path)
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(2))
    assert list(tmp_path.iterdir()) == [path]


def test_bad_settings_are_config_errors(toy, digits, tmp_path):
    with pytest.raises(ConfigError, match="unknown training option"):
        _train(toy, digits, tmp_path / "s.pt", colour="blue")
    with pytest.raises(ConfigError, match="optimizer='lion'"):
        _train(toy, digits, tmp_path / "s.pt", optimizer="lion")
    with pytest.raises(ConfigError, match="epochs=0"):
        _train(toy, digits, tmp_path / "s.pt", epochs=0)


# --- which subnets are trained ----------------------------------------------------------------
def _narrow(cfg: ToyConfig) -> bool:
    return cfg.width == 8


def test_fitting_sampler_draws_only_what_fits(toy):
    sampler = FittingSampler(toy, _narrow, {"rule": "width 8"}, seed=3, pool_size=50)
    assert sorted(map(toy.encode, sampler.pool)) == [
        "r12-w8-d1", "r12-w8-d2", "r8-w8-d1", "r8-w8-d2",
    ]  # fmt: skip: all four narrow configs, each once
    assert _narrow(sampler.largest) and _narrow(sampler.smallest)
    rng = random.Random(0)
    assert all(_narrow(sampler.sample(rng)) for _ in range(100))
    again = FittingSampler(toy, _narrow, {"rule": "width 8"}, seed=3, pool_size=50)
    assert again.pool == sampler.pool and again.describe() == sampler.describe()
    described = sampler.describe()
    assert described["kind"] == "fitting" and described["found"] == 4
    assert described["constraint"] == {"rule": "width 8"}
    taught = FittingSampler(toy, _narrow, {}, seed=3, teacher=toy.largest())
    assert taught.largest == toy.largest() and taught.pool == sampler.pool
    whole = SpaceSampler(toy)
    assert (whole.largest, whole.smallest) == (toy.largest(), toy.smallest())


def test_smallest_weight_zero_leaves_the_smallest_out_of_the_sandwich(
    toy, digits, tmp_path, monkeypatch
):
    trained: list[ToyConfig] = []
    original = ToyNet.set_active

    def set_active(self, cfg):
        trained.append(cfg)
        original(self, cfg)

    monkeypatch.setattr(ToyNet, "set_active", set_active)
    monkeypatch.setattr("edgekit.training.supernet.evaluate", lambda *args, **kw: 0.0)
    sampler = FittingSampler(toy, lambda cfg: cfg.width == 16, {"rule": "wide"})
    counts = []
    for weight in (0.0, 1.0):
        trained.clear()
        _train(toy, digits, tmp_path / f"s{weight}.pt", epochs=1, num_random=1,
               smallest_weight=weight, sampler=sampler)  # fmt: skip
        counts.append(len(trained))
        assert all(cfg.width == 16 for cfg in trained)
    steps = 5  # 160 images / batch 32
    assert counts[1] - counts[0] == steps  # one subnet less per step


def test_fitting_sampler_with_nothing_that_fits_is_a_config_error(toy):
    with pytest.raises(ConfigError, match=r"no toy subnet of 40 drawn satisfies .*width 99"):
        FittingSampler(toy, lambda cfg: False, {"rule": "width 99"}, max_draws=40)
    with pytest.raises(ConfigError, match="pool_size=0"):
        FittingSampler(toy, _narrow, {}, pool_size=0)


def test_training_on_fitting_subnets_trains_only_those_and_resumes_only_with_them(
    toy, digits, tmp_path, monkeypatch
):
    sampler = FittingSampler(toy, _narrow, {"rule": "width 8"})
    trained: list[ToyConfig] = []
    original = ToyNet.set_active
    monkeypatch.setattr(
        ToyNet, "set_active", lambda self, cfg: (trained.append(cfg), original(self, cfg))[1]
    )
    path = tmp_path / "narrow.pt"
    _train(toy, digits, path, epochs=1, num_random=2, sampler=sampler)
    assert trained and all(_narrow(cfg) for cfg in trained)
    assert read_checkpoint(path)["subnets"] == sampler.describe()
    with pytest.raises(CheckpointError, match=r"subnets .*width 8.* got \{.kind.: .sp"):
        _train(toy, digits, path, epochs=2, resume=True)
    resumed = _train(toy, digits, path, epochs=2, resume=True, sampler=sampler)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 2

    # A checkpoint from before samplers existed trained the whole space.
    older = tmp_path / "older.pt"
    _train(toy, digits, older, epochs=1)
    payload = read_checkpoint(older)
    assert payload.pop("subnets") == {"kind": "space"}
    save_checkpoint(payload, older)
    assert _train(toy, digits, older, epochs=2, resume=True).resumed_from_epoch == 1


# --- evaluation and BatchNorm recalibration ---------------------------------------------------
def test_recalibration_is_a_cumulative_average_and_evaluate_restores(toy, digits, tmp_path):
    supernet = _train(toy, digits, tmp_path / "s.pt", epochs=1).supernet
    cfg = toy.smallest()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}

    inputs: list[torch.Tensor] = []
    hook = supernet.bns[0].register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    with preserved_buffers(supernet):
        recalibrate_bn(toy, supernet, cfg, digits.train, batches=3, batch_size=32)
        hook.remove()
        assert not supernet.training and supernet.bns[0].momentum == 0.1
        assert len(inputs) == 3
        means = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
        variances = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
        torch.testing.assert_close(supernet.bns[0].running_mean[: cfg.width], means)
        torch.testing.assert_close(supernet.bns[0].running_var[: cfg.width], variances)
        assert not torch.equal(supernet.bns[0].running_mean, before["bns.0.running_mean"])
    assert _same_state(supernet, _with_state(toy, before))

    accuracy = evaluate(toy, supernet, cfg, digits.test, recalibrate_with=digits.train, batches=3)
    assert 0.0 <= accuracy <= 1.0
    assert _same_state(supernet, _with_state(toy, before))
    assert supernet.active == cfg or supernet.active is not None


def _with_state(space: ToySpace, state: dict[str, torch.Tensor]) -> nn.Module:
    net = space.build_supernet()
    net.load_state_dict(state)
    return net


def test_evaluate_counts_correct_predictions(toy, digits, tmp_path):
    supernet = _train(toy, digits, tmp_path / "s.pt", epochs=2).supernet
    cfg = toy.largest()
    supernet.set_active(cfg)
    with torch.no_grad():
        x = torch.from_numpy(digits.test.x[:50]).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
        want = (supernet(x).argmax(1) == torch.from_numpy(digits.test.y[:50])).float().mean()
    got = evaluate(toy, supernet, cfg, digits.test, max_samples=50, batch_size=16)
    assert got == pytest.approx(float(want))


# --- CLI: edgekit train-supernet ---------------------------------------------------------------
def _train_cli(argv: list[str]) -> int:
    import argparse

    from edgekit.cli import train as train_cli

    parser = argparse.ArgumentParser()
    parser.add_argument("-q", "--quiet", action="store_true")
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_supernet(tmp_path, capsys):
    out = tmp_path / "vit.pt"
    argv = ["-q", "train-supernet", "--space", "tiny-vit", "--out", str(out), "--epochs", "1",
            "--max-per-split", "32", "--threads", "1"]  # fmt: skip
    assert _train_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "largest" in printed and "smallest" in printed and str(out) in printed
    assert read_checkpoint(out)["epoch"] == 1
    with pytest.raises(CheckpointError, match="--resume"):
        _train_cli(argv)
    assert _train_cli([*argv[:-4], "--epochs", "2", "--resume", *argv[-4:]]) == 0
    assert read_checkpoint(out)["epoch"] == 2
    assert "resumed from epoch 1" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown space"):
        _train_cli(["train-supernet", "--space", "nope", "--out", str(tmp_path / "x.pt")])
    bad_device = ["train-supernet", "--space", "tiny-cnn", "--out", str(tmp_path / "x.pt"),
                  "--device", "tpu"]  # fmt: skip
    with pytest.raises(ConfigError, match="device='tpu': expected 'cpu', 'cuda' or 'cuda:N'"):
        _train_cli(bad_device)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda': no CUDA GPU is available"):
            _train_cli([*bad_device[:-1], "cuda"])


def test_cli_train_supernet_for_a_board_trains_what_fits(tmp_path, capsys):
    out = tmp_path / "cnn.pt"
    argv = ["-q", "train-supernet", "--space", "tiny-cnn", "--out", str(out), "--epochs", "1",
            "--max-per-split", "32", "--threads", "1", "--board", "stm32f746g-disco",
            "--sram", "60KiB"]  # fmt: skip
    assert _train_cli(argv) == 0
    printed = capsys.readouterr().out
    subnets = read_checkpoint(out)["subnets"]
    assert subnets["kind"] == "fitting"
    assert subnets["constraint"]["board"] == "stm32f746g-disco"
    assert subnets["constraint"]["sram_bytes"] == 60 * 1024
    assert "smallest that fits" in printed and subnets["smallest"] in printed
    with pytest.raises(ConfigError, match="--sram needs --board"):
        _train_cli(["train-supernet", "--space", "tiny-cnn", "--out", str(tmp_path / "x.pt"),
                    "--sram", "60KiB"])  # fmt: skip
