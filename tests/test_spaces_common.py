"""The shared suite every registered search space passes (parametrized over ``list_spaces()``)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from edgekit.errors import ConfigError
from edgekit.spaces import config_from_dict, get_space, list_spaces
from edgekit.training import (
    batchnorm_layers,
    evaluate,
    prepare_input,
    preserved_buffers,
    read_checkpoint,
    recalibrate_bn,
    train_supernet,
)

torch.set_num_threads(1)

SPACES = list_spaces()
REPO = Path(__file__).resolve().parents[1]
DATASET_FIELDS = ("num_classes", "in_channels")


@pytest.fixture(scope="module", params=SPACES)
def space(request):
    return get_space(request.param)


def _configs(space, count: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(count))]


def _knob_fields(space) -> list[str]:
    return [f.name for f in dataclasses.fields(space.config_cls) if f.name not in DATASET_FIELDS]


# --- plain data --------------------------------------------------------------------------------
def test_registry_and_config_shape():
    assert sorted(SPACES) == SPACES and {"tiny-cnn", "tiny-vit"} <= set(SPACES)
    for name in SPACES:
        space = get_space(name, num_classes=7, in_channels=3)
        assert space.name == name and space.config_cls.space == name
        assert [f.name for f in dataclasses.fields(space.config_cls)][:2] == list(DATASET_FIELDS)
        cfg = space.largest()
        assert (cfg.num_classes, cfg.in_channels) == (7, 3)
        assert set(space.choices()) <= set(_knob_fields(space))
    with pytest.raises(ConfigError, match="unknown space 'nope'"):
        get_space("nope")


@pytest.mark.parametrize(("num_classes", "in_channels"), [(10, 1), (4, 3)])
def test_json_genome_and_vector_round_trips(space, num_classes, in_channels):
    space = get_space(space.name, num_classes=num_classes, in_channels=in_channels)
    for cfg in _configs(space, 300):
        space.validate(cfg)
        hash(cfg)
        for field in dataclasses.fields(cfg):
            assert not isinstance(getattr(cfg, field.name), list), field.name
        text = cfg.to_json()
        assert json.loads(text)["space"] == space.name
        assert space.from_json(text) == cfg
        assert config_from_dict(json.loads(text)) == cfg
        genome = space.encode(cfg)
        assert isinstance(genome, str) and " " not in genome
        assert space.decode(genome) == cfg
        vector = space.to_vector(cfg)
        assert len(vector) == len(space.vector_bounds())
        assert all(0 <= v < b for v, b in zip(vector, space.vector_bounds(), strict=True))
        assert space.from_vector(vector) == cfg


def test_from_vector_is_valid_for_any_in_bounds_vector(space):
    bounds = space.vector_bounds()
    rng = random.Random(1)
    for _ in range(300):
        cfg = space.from_vector([rng.randrange(b) for b in bounds])
        space.validate(cfg)
        assert space.decode(space.encode(cfg)) == cfg
        assert space.from_vector(space.to_vector(cfg)) == cfg
    with pytest.raises(ConfigError):
        space.from_vector([b for b in bounds])  # every gene one past its last choice
    with pytest.raises(ConfigError):
        space.from_vector([0] * (len(bounds) + 1))


def test_sample_is_deterministic_and_spans_the_space(space):
    first = [space.sample(random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng_a, rng_b = random.Random(3), random.Random(3)
    many = [space.sample(rng_a) for _ in range(50)]
    assert many == [space.sample(rng_b) for _ in range(50)]
    assert len(set(many)) > 40
    for knob, allowed in space.choices().items():
        seen = set()
        for cfg in many:
            value = getattr(cfg, knob)
            seen.update(value if isinstance(value, tuple) else (value,))
        assert seen <= set(allowed), knob
        assert len(seen) > 1, f"{knob} never varies in 50 samples"


def test_smallest_is_smaller_than_largest(space):
    small, large = space.count(space.smallest()), space.count(space.largest())
    assert 0 < small.params < large.params
    assert 0 < small.macs < large.macs
    rng = random.Random(0)
    for _ in range(50):
        counts = space.count(space.sample(rng))
        assert small.params <= counts.params <= large.params


# --- validation errors -------------------------------------------------------------------------
def _bad_value(value):
    if isinstance(value, tuple):
        return (_bad_value(value[0]), *value[1:])
    return 0.123 if isinstance(value, float) else 999


def test_validation_names_the_field_and_its_allowed_values(space):
    cfg = space.largest()
    for knob, allowed in space.choices().items():
        bad = dataclasses.replace(cfg, **{knob: _bad_value(getattr(cfg, knob))})
        with pytest.raises(ConfigError) as excinfo:
            space.validate(bad)
        message = str(excinfo.value)
        assert knob in message and "\n" not in message
        assert all(str(v) in message for v in allowed), message
        with pytest.raises(ConfigError, match=knob):
            space.from_dict(bad.to_dict())


def test_from_dict_rejects_unknown_missing_and_foreign(space):
    data = space.largest().to_dict()
    with pytest.raises(ConfigError, match="colour"):
        space.from_dict({**data, "colour": "blue"})
    missing = dict(data)
    knob = _knob_fields(space)[0]
    del missing[knob]
    with pytest.raises(ConfigError, match=knob):
        space.from_dict(missing)
    other = next(name for name in SPACES if name != space.name)
    with pytest.raises(ConfigError, match=other):
        space.from_dict({**data, "space": other})
    with pytest.raises(ConfigError):
        space.validate(get_space(other).largest())
    with pytest.raises(ConfigError, match="num_classes"):
        get_space(space.name, num_classes=5).validate(space.largest())
    with pytest.raises(ConfigError):
        space.from_json("{not json")
    for genome in ("", "garbage", space.encode(space.largest()) + "-zz9"):
        with pytest.raises(ConfigError):
            space.decode(genome)


# --- torch side --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(space):
    """A supernet after a few random sandwich steps, so weights and BN stats are non-trivial.
    Shared by the tests of one space: they must leave it as they found it."""
    torch.manual_seed(0)
    supernet = space.build_supernet()
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9)
    rng = random.Random(0)
    supernet.train()
    for _ in range(2):
        optimizer.zero_grad()
        for cfg in (space.largest(), space.sample(rng), space.sample(rng)):
            supernet.set_active(cfg)
            x = prepare_input(space, torch.rand(4, space.in_channels, 8, 8), cfg)
            F.cross_entropy(supernet(x), torch.randint(0, space.num_classes, (4,))).backward()
        optimizer.step()
    return supernet.eval()


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}


def test_extracted_subnets_equal_the_supernet(space, trained):
    for cfg in _configs(space, 6, seed=2):
        height, width, channels = space.input_shape(cfg)
        x = torch.rand(3, channels, height, width)
        trained.set_active(cfg)
        with torch.no_grad():
            want = trained(x)
            net = space.extract(trained, cfg).eval()
            got = net(x)
        assert got.shape == (3, space.num_classes)
        assert (got - want).abs().max().item() <= 1e-5, space.encode(cfg)
        assert not _storages(net) & _storages(trained), "extract must copy weights"
        # Layers are plain torch.nn modules; only the root may own a tensor (a position table).
        for module in list(net.modules())[1:]:
            if next(module.parameters(recurse=False), None) is not None:
                assert type(module).__module__.startswith("torch.nn."), type(module)


def test_counts_match_parameters_and_flop_counter(space, trained):
    for cfg in _configs(space, 6, seed=3):
        net = space.extract(trained, cfg).eval()
        counts = space.count(cfg)
        assert counts.params == sum(p.numel() for p in net.parameters()), space.encode(cfg)
        height, width, channels = space.input_shape(cfg)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.rand(1, channels, height, width))
        assert counts.macs == counter.get_total_flops() // 2, space.encode(cfg)


def test_bn_recalibration_and_evaluate_leave_the_supernet_intact(space, trained):
    from edgekit.data import load_dataset

    splits = load_dataset("digits", seed=0, max_per_split=64)
    cfg = space.smallest()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    layers = batchnorm_layers(trained)
    inputs: dict[nn.Module, list[torch.Tensor]] = {layer: [] for layer in layers}
    hooks = [
        layer.register_forward_hook(lambda m, args, out: inputs[m].append(args[0]))
        for layer in layers
    ]
    with preserved_buffers(trained):
        recalibrate_bn(space, trained, cfg, splits.train, batches=2, batch_size=32)
        for hook in hooks:
            hook.remove()
        assert not trained.training and trained.active == cfg
        for layer, seen in inputs.items():
            if not seen:
                continue  # a layer the smallest subnet does not use
            assert len(seen) == 2
            channels = seen[0].shape[1]
            mean = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
            torch.testing.assert_close(layer.running_mean[:channels], mean, rtol=1e-4, atol=1e-5)
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    accuracy = evaluate(space, trained, cfg, splits.test, recalibrate_with=splits.train, batches=2)
    assert 0.0 <= accuracy <= 1.0
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- training: resume after kill -9 ------------------------------------------------------------
_CHILD = """
import sys, time
import torch
torch.set_num_threads(1)
from edgekit.data import load_dataset
from edgekit.spaces import get_space
from edgekit.training import train_supernet

name, path = sys.argv[1], sys.argv[2]
splits = load_dataset("digits", seed=0, max_per_split=32)
space = get_space(name, num_classes=splits.num_classes, in_channels=1)

def stall_in_second_epoch(done, total, status):
    if done > total // 2:  # mid-epoch 2: wait here to be killed
        time.sleep(120)

train_supernet(space, splits, epochs=2, checkpoint_path=path, batch_size=16, lr=1e-3,
               recalibrate_batches=1, progress=stall_in_second_epoch)
"""


def test_resume_after_kill(space, tmp_path):
    path = tmp_path / "supernet.pt"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, space.name, str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.1)
        time.sleep(0.3)
        assert child.poll() is None, "the run should be stalled in epoch 2"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    saved = read_checkpoint(path)
    assert saved["epoch"] == 1 and [h["epoch"] for h in saved["history"]] == [1]

    from edgekit.data import load_dataset

    splits = load_dataset("digits", seed=0, max_per_split=32)
    result = train_supernet(
        space, splits, epochs=2, checkpoint_path=path, batch_size=16, lr=1e-3,
        recalibrate_batches=1, resume=True,
    )  # fmt: skip
    assert result.resumed_from_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[0] == saved["history"][0]  # the completed epoch was kept
    final = read_checkpoint(path)
    assert final["epoch"] == 2 and final["complete"]


# --- CLI: edgekit space ------------------------------------------------------------------------
def _space_cli(argv: list[str]) -> int:
    import argparse

    from edgekit.cli import space as space_cli

    parser = argparse.ArgumentParser()
    space_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_space_list_and_sample(capsys):
    assert _space_cli(["space", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == SPACES
    for row in rows:
        assert row["num_configs"] > 1000
        assert row["smallest"]["params"] < row["largest"]["params"]
    assert _space_cli(["space", "list"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in SPACES)

    for name in SPACES:
        argv = ["space", "sample", name, "-n", "3", "--seed", "4", "--json"]
        assert _space_cli(argv) == 0
        out = capsys.readouterr().out
        assert _space_cli(argv) == 0 and capsys.readouterr().out == out  # seeded
        space = get_space(name)
        for line in out.splitlines():
            record = json.loads(line)
            cfg = space.decode(record["genome"])
            assert space.from_dict(record["config"]) == cfg
            assert (record["params"], record["macs"]) == dataclasses.astuple(space.count(cfg))
        assert _space_cli(["space", "sample", name, "-n", "2"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2


def test_cli_space_show(capsys):
    for name in SPACES:
        space = get_space(name)
        genome = space.encode(space.smallest())
        assert _space_cli(["space", "show", name, genome]) == 0
        out = capsys.readouterr().out
        assert genome in out and f"{space.count(space.smallest()).params:,}" in out
        with pytest.raises(ConfigError):
            _space_cli(["space", "show", name, "not-a-genome"])
    with pytest.raises(ConfigError, match="unknown space"):
        _space_cli(["space", "sample", "nope"])
