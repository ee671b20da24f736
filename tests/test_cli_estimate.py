"""`edgekit estimate` on a .tflite file and on a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_memory_file import _add_reshape_model

from edgekit.cli import main
from edgekit.estimate import analyze_tflite, estimate_config
from edgekit.spaces import get_space, list_spaces


def test_file_verdict_and_exit_status(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(_add_reshape_model())
    arena = analyze_tflite(path, pointer_bytes=4).arena_bytes
    assert main(["-q", "estimate", str(path), "--board", "rpi-pico", "--ops"]) == 0
    out = capsys.readouterr().out
    assert f"{arena:,}" in out and "rpi-pico: fits" in out and "per operator" in out
    # One byte short of the arena: does not fit, exit status 1, the overflow is named.
    assert main(["-q", "estimate", str(path), "--sram", str(arena - 1), "--flash", "1MiB"]) == 1
    assert "OVER by" in capsys.readouterr().out
    assert main(["-q", "estimate", str(path), "--sram", str(arena), "--flash", "1MiB"]) == 0
    capsys.readouterr()
    assert main(["-q", "estimate", str(path), "--pointer-bytes", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arena_bytes"] == analyze_tflite(path).arena_bytes


def test_ops_name_their_layers_from_the_bundle_manifest(tmp_path: Path, capsys) -> None:
    import hashlib

    model = _add_reshape_model()
    path = tmp_path / "model.tflite"
    path.write_bytes(model)
    ops = len(analyze_tflite(path).per_op)
    manifest = {"model": {"sha256": hashlib.sha256(model).hexdigest()},
                "op_layers": [f"layer{i}" for i in range(ops)]}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["-q", "estimate", str(path), "--ops", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [row["layer"] for row in record["ops"]] == manifest["op_layers"]
    # Tensors at the peak are named by the layer that writes them.
    names = {"input", *manifest["op_layers"]}
    assert record["peak_tensors"]
    assert all(tensor.split("[")[1].split("]")[0] in names for tensor in record["peak_tensors"])
    # A manifest of another file names nothing.
    manifest["model"]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["-q", "estimate", str(path), "--ops", "--json"]) == 0
    assert "layer" not in json.loads(capsys.readouterr().out)["ops"][0]


@pytest.mark.parametrize("name", list_spaces())
def test_config_genome_and_json(name: str, tmp_path: Path, capsys) -> None:
    space = get_space(name)
    cfg = space.smallest()
    expected = estimate_config(cfg, pointer_bytes=4)
    assert main(["-q", "estimate", space.encode(cfg), "--space", name, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["arena_bytes"], record["flash_bytes"]) == (
        expected.arena_bytes,
        expected.flash_bytes,
    )
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert main(["-q", "estimate", str(path), "--board", "nucleo-l4r5zi"]) == 0
    assert "nucleo-l4r5zi: fits" in capsys.readouterr().out


def test_bad_config_names_the_value(capsys) -> None:
    assert main(["-q", "estimate", "r32-w9", "--space", "tiny-cnn"]) == 1
    assert "width_mult value '9'" in capsys.readouterr().err


def test_a_budget_without_a_board_needs_both_sizes(capsys) -> None:
    genome = get_space("tiny-cnn").encode(get_space("tiny-cnn").smallest())
    assert main(["-q", "estimate", genome, "--sram", "20KiB"]) == 1
    assert "give both --sram and --flash" in capsys.readouterr().err
