"""The search (issue #6): budget filtering, fail-fast, determinism, resume after kill -9, the
run lock, the report and the CLI.

Everything runs on a small synthetic 4-class data set and a randomly initialised tiny-vit
supernet (accuracy need not be high for the mechanics), without exporting (the exporter is
replaced by a stub where the orchestration around it is tested).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgekit.search.objectives as objectives
from edgekit.data import Split, Splits
from edgekit.profiles import load_profile
from edgekit.search import (
    Budget,
    ImpossibleBudgetError,
    SearchError,
    SearchSettings,
    SpaceSearch,
    TrialStore,
    footprint,
    load_result,
    pareto_front,
    read_records,
    render_report,
    run_search,
)
from edgekit.search.store import run_lock
from edgekit.search.trials import misfits
from edgekit.spaces import get_space, list_spaces

torch.set_num_threads(1)

BOARD = "stm32f746g-disco"
SRAM = "40KiB"  # tight enough that some random tiny-vit configs are rejected
REPO = Path(__file__).resolve().parents[1]

def synthetic_splits(seed: int = 0, train: int = 160, held_out: int = 48) -> Splits:
    """Four classes of 8x8 images, each a bright band of rows (learnable, but not trivially)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        y = rng.integers(0, 4, n).astype(np.int64)
        x = rng.random((n, 8, 8, 1), dtype=np.float32) * 0.3
        for i, label in enumerate(y):
            x[i, 2 * label : 2 * label + 2, :, 0] += 0.7
        return Split(np.clip(x, 0, 1).astype(np.float32), y)

    return Splits(split(train), split(held_out), split(held_out), ("a", "b", "c", "d"),
                  "synthetic", "generated")  # fmt: skip


@pytest.fixture(scope="module")
def splits() -> Splits:
    return synthetic_splits()


def _supernet() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_space("tiny-vit", num_classes=4, in_channels=1).build_supernet()


@pytest.fixture(scope="module")
def supernet() -> torch.nn.Module:
    return _supernet()


def _search(out: Path, splits: Splits, supernet: torch.nn.Module, **options: Any) -> Any:
    settings: dict[str, Any] = {
        "sram": SRAM, "evaluations": 14, "population": 6, "supernet": supernet,
        "export": False, "recalibrate_batches": 1,
    }  # fmt: skip
    settings.update(options)
    return run_search("tiny-vit", BOARD, splits, out, **settings)


def _trial_lines(run_dir: Path) -> list[dict[str, Any]]:
    """Trial records without their timings (which differ from run to run)."""
    out = []
    for record in read_records(run_dir / "trials.jsonl"):
        if record["kind"] == "trial":
            out.append({k: v for k, v in record.items() if k != "seconds"})
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, splits: Splits,
                 supernet: torch.nn.Module) -> Any:  # fmt: skip
    return _search(tmp_path_factory.mktemp("runs") / "reference", splits, supernet)


# --- budgets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("resource", ["sram", "flash", "latency"])
def test_budget_boundary_is_inclusive(resource: str) -> None:
    board = load_profile(BOARD)
    space = get_space("tiny-vit", num_classes=4)
    fp = footprint(space, space.smallest(), board)
    exact = {"sram": fp.arena_bytes, "flash": fp.flash_bytes, "latency": fp.latency_ms}[resource]
    below = exact - 1 if resource != "latency" else exact * (1 - 1e-9)

    def budget(value: float) -> Budget:
        if resource == "latency":
            return Budget.for_board(board, latency_ms=value)
        return Budget.for_board(board, **{resource: int(value)})

    assert budget(exact).fits(fp)
    assert not budget(below).fits(fp)
    assert max(budget(below).violations(fp)) > 0


def test_budget_defaults_to_what_the_board_leaves() -> None:
    board = load_profile(BOARD)
    budget = Budget.for_board(board)
    assert (budget.sram_bytes, budget.flash_bytes, budget.latency_ms) == (
        board.sram_budget_bytes, board.flash_budget_bytes, None,
    )  # fmt: skip
    assert Budget.for_board(board, sram="256KiB", flash="1MiB").sram_bytes == 256 * 1024
    with pytest.raises(SearchError, match="sram"):
        Budget.for_board(board, sram="lots")


def test_initial_population_holds_only_configs_within_an_exact_budget(tmp_path: Path) -> None:
    board = load_profile(BOARD)
    space = get_space("tiny-vit", num_classes=4)
    # A budget exactly at some config's arena: that config fits, one byte more would not.
    probe = footprint(space, space.decode("r24-p8-e48-d2-h2.1-m2.2-rk0.5"), board)
    budget = Budget(sram_bytes=probe.arena_bytes, flash_bytes=board.flash_budget_bytes)
    with TrialStore(tmp_path / "trials.jsonl") as store:
        search = SpaceSearch(space, board, budget, SearchSettings(population=12), store)
        population = search.prepare()
    assert len(population) == 12
    arenas = [footprint(space, cfg, board).arena_bytes for cfg in population]
    assert max(arenas) <= probe.arena_bytes
    assert search.stats["rejected"] > 0  # over-budget draws were discarded, never evaluated


def test_evolution_starts_from_the_largest_but_not_the_smallest(tmp_path: Path) -> None:
    # The sandwich rule over-trains the smallest subnet, so its inherited accuracy is inflated:
    # the initial population holds the largest config (it fits this budget), not the smallest.
    board = load_profile(BOARD)
    space = get_space("tiny-vit", num_classes=4)
    budget = Budget.for_board(board)
    assert budget.fits(footprint(space, space.largest(), board))
    assert budget.fits(footprint(space, space.smallest(), board))
    with TrialStore(tmp_path / "trials.jsonl") as store:
        population = SpaceSearch(space, board, budget, SearchSettings(population=6),
                                 store).prepare()  # fmt: skip
    assert population[0] == space.largest()
    assert space.smallest() not in population


def test_search_evaluates_only_configs_that_fit(finished_run: Any) -> None:
    records = read_records(finished_run.run_dir / "trials.jsonl")
    budget = finished_run.budget
    evaluated = [r for r in records if r["kind"] == "trial" and r["status"] == "evaluated"]
    rejected = [r for r in records if r["kind"] == "trial" and r["status"] == "over_budget"]
    assert len(evaluated) == 14
    assert all(r["arena_bytes"] <= budget.sram_bytes for r in evaluated)
    assert all(r["val_accuracy"] is not None for r in evaluated)
    assert all(r["val_accuracy"] is None for r in rejected)
    assert all(
        r["arena_bytes"] > budget.sram_bytes or r["flash_bytes"] > budget.flash_bytes
        for r in rejected
    )


def test_impossible_budget_fails_fast_naming_the_smallest_footprint(
    tmp_path: Path, splits: Splits
) -> None:
    started = time.perf_counter()
    with pytest.raises(ImpossibleBudgetError) as caught:
        # No supernet given: reaching the trainer would take minutes, so failing fast shows.
        run_search("tiny-vit", BOARD, splits, tmp_path / "run", sram="2KiB")
    assert time.perf_counter() - started < 30
    message = str(caught.value)
    smallest = caught.value.smallest["tiny-vit"]
    board = load_profile(BOARD)
    space = get_space("tiny-vit", num_classes=4)
    floor = footprint(space, space.smallest(), board)
    assert smallest["arena_bytes"] <= floor.arena_bytes
    assert smallest["arena_bytes"] > 2048
    assert "no tiny-vit architecture fits arena <= 2.0 KiB" in message
    assert smallest["arena_bytes_genome"] in message
    assert not (tmp_path / "run" / "supernets").exists()


def test_impossible_for_every_space_names_each(tmp_path: Path, splits: Splits) -> None:
    with pytest.raises(ImpossibleBudgetError) as caught:
        run_search("all", BOARD, splits, tmp_path / "run", flash="1KiB")
    assert set(caught.value.smallest) == set(list_spaces())
    assert "no tiny-cnn architecture" in str(caught.value)


# --- determinism, resume, lock -------------------------------------------------------------
def test_same_seed_gives_the_same_trials(
    tmp_path: Path, splits: Splits, supernet: torch.nn.Module, finished_run: Any
) -> None:
    again = _search(tmp_path / "again", splits, supernet)
    assert _trial_lines(again.run_dir) == _trial_lines(finished_run.run_dir)
    assert [t.genome for t in again.pareto] == [t.genome for t in finished_run.pareto]
    assert again.chosen == finished_run.chosen
    other = _search(tmp_path / "other-seed", splits, supernet, seed=1)
    assert _trial_lines(other.run_dir) != _trial_lines(finished_run.run_dir)


def test_an_existing_run_needs_resume_with_the_same_settings(
    finished_run: Any, splits: Splits, supernet: torch.nn.Module
) -> None:
    with pytest.raises(SearchError, match="already holds a search; pass --resume"):
        _search(finished_run.run_dir, splits, supernet)
    with pytest.raises(SearchError, match="evaluations"):
        _search(finished_run.run_dir, splits, supernet, resume=True, evaluations=20)
    before = (finished_run.run_dir / "trials.jsonl").read_bytes()
    # A run from before `supernet_subnets` existed resumes too.
    run_file = finished_run.run_dir / "run.json"
    saved = json.loads(run_file.read_text())
    assert saved["settings"].pop("supernet_subnets") is None  # a supernet was given
    run_file.write_text(json.dumps(saved))
    resumed = _search(finished_run.run_dir, splits, supernet, resume=True)
    assert (finished_run.run_dir / "trials.jsonl").read_bytes() == before  # nothing redone
    assert resumed.summaries["tiny-vit"]["cached"] == 14


def test_a_supernet_trained_by_the_search_trains_only_subnets_that_fit(
    tmp_path: Path, splits: Splits
) -> None:
    from edgekit.training import read_checkpoint

    result = _search(tmp_path / "own", splits, None, supernet_epochs=1,
                     evaluations=4, population=4)  # fmt: skip
    subnets = read_checkpoint(result.run_dir / "supernets" / "tiny-vit.pt")["subnets"]
    assert subnets["kind"] == "fitting"
    assert subnets["constraint"] == {"board": BOARD, **result.budget.to_dict()}
    space = get_space("tiny-vit", num_classes=4, in_channels=1)
    board = load_profile(BOARD)
    # The teacher is the space's largest, which does not fit; the other subnets all do.
    assert subnets["largest"] == space.encode(space.largest())
    assert not result.budget.fits(footprint(space, space.largest(), board))
    assert result.budget.fits(footprint(space, space.decode(subnets["smallest"]), board))
    checkpoint = str(result.run_dir / "supernets" / "tiny-vit.pt")
    assert objectives.supernet_teacher(space, checkpoint) == space.largest()
    assert objectives.supernet_teacher(space, "in-memory") == space.largest()
    only = objectives.subnet_sampler(space, board, result.budget, "fitting-only", seed=0)
    assert result.budget.fits(footprint(space, only.largest, board))
    assert only.describe()["largest"] == space.encode(only.largest)
    with pytest.raises(SearchError, match="supernet_subnets='some'"):
        _search(tmp_path / "bad", splits, None, supernet_subnets="some")


def test_a_second_search_on_the_same_folder_is_refused(
    tmp_path: Path, splits: Splits, supernet: torch.nn.Module
) -> None:
    with run_lock(tmp_path / "busy"), pytest.raises(SearchError, match="in use by another"):
        _search(tmp_path / "busy", splits, supernet)


_KILLED_RUN = """
import sys, time, torch
sys.path.insert(0, sys.argv[2])
from test_search import synthetic_splits
import edgekit.search.objectives as objectives
from edgekit.search import run_search
from edgekit.spaces import get_space

torch.set_num_threads(1)
evaluate = objectives.evaluate_accuracy

def slow_evaluate(*args, **kwargs):  # slow enough to be killed mid-run
    time.sleep(0.15)
    return evaluate(*args, **kwargs)

objectives.evaluate_accuracy = slow_evaluate
torch.manual_seed(0)
supernet = get_space("tiny-vit", num_classes=4, in_channels=1).build_supernet()
run_search("tiny-vit", "stm32f746g-disco", synthetic_splits(), sys.argv[1], sram="40KiB",
           evaluations=14, population=6, supernet=supernet, export=False,
           recalibrate_batches=1)
"""


def test_resume_after_kill_9_keeps_every_finished_trial(
    tmp_path: Path, splits: Splits, supernet: torch.nn.Module, finished_run: Any
) -> None:
    run_dir = tmp_path / "killed"
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), str(run_dir), str(Path(__file__).parent)]
    process = subprocess.Popen(command, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    trials = run_dir / "trials.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if trials.exists() and trials.read_bytes().count(b'"status":"evaluated"') >= 4:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    before = [r for r in _trial_lines(run_dir) if r["status"] == "evaluated"]
    assert 4 <= len(before) < 14
    with open(trials, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"kind":"trial","space":"tiny-')

    resumed = _search(run_dir, splits, supernet, resume=True)

    after = _trial_lines(run_dir)
    evaluated = [r for r in after if r["status"] == "evaluated"]
    assert evaluated[: len(before)] == before  # kept, unchanged, in order
    assert len({r["genome"] for r in evaluated}) == len(evaluated) == 14  # none evaluated twice
    assert resumed.summaries["tiny-vit"]["cached"] == len(before)
    # The continued run ends exactly where an uninterrupted one does.
    reference = [r for r in _trial_lines(finished_run.run_dir) if r["status"] == "evaluated"]
    assert evaluated == reference
    assert resumed.chosen == finished_run.chosen


def test_trial_store_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    with TrialStore(path) as store:
        store.append({"kind": "test", "value": 1})
    with open(path, "ab") as f:
        f.write(b'{"kind": "te')
    assert read_records(path) == [{"kind": "test", "value": 1}]
    with TrialStore(path) as store:
        store.append({"kind": "test", "value": 2})
    assert [r["value"] for r in read_records(path)] == [1, 2]
    path.write_bytes(b'{"kind": "test"}\nnot json\n{"kind": "test"}\n')
    with pytest.raises(SearchError, match="line 2"):
        read_records(path)


# --- fine-tune + export orchestration, report -------------------------------------------------
def _fake_exporter(exported: list[str], flash_bytes: Any = lambda number: 60000) -> Any:
    """Stands in for export_subnet: records the genomes, returns export figures (the flash of
    the n-th export from ``flash_bytes(n)``)."""

    def fake_export(space, supernet, cfg, splits, out_dir, **kwargs):  # type: ignore[no-untyped-def]
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "manifest.json").write_text("{}")
        exported.append(space.encode(cfg))
        return {"bundle": str(out_dir), "model": str(out_dir / "model.tflite"),
                "files": {"manifest": str(out_dir / "manifest.json")},
                "fp32_test_accuracy": 0.5, "int8_test_accuracy": 0.49, "quantization": "ptq",
                "arena_measured_host_bytes": 30000, "arena_firmware_bytes": 25000,
                "flash_bytes": flash_bytes(len(exported)), "fits_board": True,
                "export_seconds": 0.0}  # fmt: skip

    return fake_export


def test_chosen_model_is_finetuned_exported_and_reported(
    tmp_path: Path, splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: list[str] = []
    monkeypatch.setattr(objectives, "export_subnet", _fake_exporter(exported))
    result = _search(tmp_path / "run", splits, _supernet(), export=True, finetune_epochs=1)
    assert exported == [result.chosen.genome]
    assert result.chosen_export is not None
    assert result.chosen_export["arena_firmware_bytes"] == 25000
    records = read_records(result.run_dir / "trials.jsonl")
    (tune,) = [r for r in records if r["kind"] == "finetune"]
    assert tune["genome"] == result.chosen.genome and tune["epochs"] == 1
    assert (result.run_dir / "finetuned" / "tiny-vit.pt").is_file() == tune["kept"]
    # Resuming a finished run redoes neither the fine-tuning nor the export.
    _search(tmp_path / "run", splits, _supernet(), export=True, finetune_epochs=1, resume=True)
    assert len(exported) == 1
    html = result.report["html"].read_text()
    assert "int8 test 49.00%" in html and "24.4 KiB" in html


def test_chosen_model_trained_alone_is_exported_with_its_own_batchnorm(
    tmp_path: Path, splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: list[str] = []
    fake = _fake_exporter(exported)
    given: list[dict[str, Any]] = []

    def exporter(space, supernet, cfg, splits, out_dir, **kwargs):  # type: ignore[no-untyped-def]
        given.append({"module": supernet, **kwargs})
        return fake(space, supernet, cfg, splits, out_dir, **kwargs)

    monkeypatch.setattr(objectives, "export_subnet", exporter)
    searched = _supernet()
    result = _search(tmp_path / "run", splits, searched, export=True, scratch_epochs=1)
    assert exported == [result.chosen.genome]
    (trained,) = [r for r in read_records(result.run_dir / "trials.jsonl")
                  if r["kind"] == "trained"]  # fmt: skip
    assert trained["genome"] == result.chosen.genome and trained["epochs"] == 1
    assert 0.0 <= trained["val_accuracy"] <= 1.0 and trained["device"] == "cpu"
    weights = result.run_dir / "trained" / f"tiny-vit-{result.chosen.genome}.pt"
    assert given[0]["checkpoint_path"] == str(weights) and weights.is_file()
    # Fresh weights, not the supernet's, and their own BatchNorm statistics at export.
    assert given[0]["module"] is not searched and given[0]["recalibrate"] is False
    shared = searched.state_dict()
    assert any(not torch.equal(v, shared[k]) for k, v in given[0]["module"].state_dict().items())
    assert "trained on its own from fresh weights for 1 epoch(s)" in (
        result.report["markdown"].read_text()
    )
    # Resuming trains and exports nothing more; a run with other settings is refused.
    _search(tmp_path / "run", splits, _supernet(), export=True, scratch_epochs=1, resume=True)
    assert len(exported) == 1
    with pytest.raises(SearchError, match="scratch_epochs"):
        _search(tmp_path / "run", splits, _supernet(), export=True, scratch_epochs=2, resume=True)
    with pytest.raises(SearchError, match="scratch_epochs=-1"):
        _search(tmp_path / "other", splits, _supernet(), scratch_epochs=-1)


def test_an_export_over_the_budgets_is_passed_over_for_the_next_choice(
    tmp_path: Path, splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first export comes out over the flash budget its config met (as it could with a
    # TensorFlow that converts differently), so the search exports the next choice.
    exported: list[str] = []
    over = lambda number: 10**9 if number == 1 else 60000  # noqa: E731
    monkeypatch.setattr(objectives, "export_subnet", _fake_exporter(exported, over))
    run_dir = tmp_path / "run"
    result = _search(run_dir, splits, _supernet(), export=True, finetune_epochs=0)
    first, second = exported
    assert first == pareto_front(result.trials)[0].genome  # the most accurate, passed over
    assert result.chosen is not None and result.chosen.genome == second != first
    assert result.chosen_export is not None and result.chosen_export["flash_bytes"] == 60000
    assert Path(result.chosen_export["bundle"]).name == "tiny-vit-choice2"
    assert (run_dir / "models" / "tiny-vit" / "manifest.json").is_file()  # kept, not overwritten
    markdown = result.report["markdown"].read_text()
    assert f"passed over: tiny-vit `{first}`" in markdown
    assert load_result(run_dir).chosen.genome == second  # type: ignore[union-attr]
    # Resuming exports nothing more.
    _search(run_dir, splits, _supernet(), export=True, finetune_epochs=0, resume=True)
    assert exported == [first, second]


def test_after_three_exports_over_the_budgets_the_third_stands_and_is_reported(
    tmp_path: Path, splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: list[str] = []
    monkeypatch.setattr(objectives, "export_subnet", _fake_exporter(exported, lambda n: 10**9))
    result = _search(tmp_path / "run", splits, _supernet(), export=True, finetune_epochs=0)
    assert len(exported) == 3 == len(set(exported))
    assert result.chosen is not None and result.chosen.genome == exported[2]
    assert result.chosen_export is not None and result.chosen_export["genome"] == exported[2]
    assert load_result(result.run_dir).chosen.genome == exported[2]  # type: ignore[union-attr]
    assert "fits the budgets: NO" in result.report["markdown"].read_text()


def test_misfits_are_the_search_exports_over_the_budgets_but_its_last_attempt() -> None:
    budget = Budget(sram_bytes=1000, flash_bytes=2000)

    def export(genome: str, flash: int, space: str = "tiny-cnn", **extra: Any) -> dict[str, Any]:
        return {"kind": "export", "space": space, "genome": genome, "flash_bytes": flash,
                "arena_measured_host_bytes": 1200, "arena_firmware_bytes": 1000, **extra}

    assert misfits([export("a", 2000)], budget) == set()  # at the boundary: fits
    over = [export("a", 2001), export("b", 2001), export("c", 2001), export("x", 9, "tiny-vit")]
    assert misfits(over, budget) == {("tiny-cnn", "a"), ("tiny-cnn", "b")}  # "c" stands
    assert misfits([export("a", 2001, reexport=True)], budget) == set()
    wide = {**export("a", 10), "arena_firmware_bytes": None, "arena_measured_host_bytes": 1001}
    assert misfits([wide], budget) == {("tiny-cnn", "a")}  # no board figure: the host's


def test_report_renders_plots_html_and_pareto_rows(finished_run: Any) -> None:
    for path in finished_run.report.values():
        path.unlink()
    files = render_report(finished_run.run_dir)
    for key in ("plot_arena", "plot_flash", "plot_latency"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = files["html"].read_text()
    assert html.count("data:image/png;base64,") == 3
    front = pareto_front(finished_run.trials)
    assert front and front[0] == finished_run.chosen
    for trial in front:
        assert trial.genome in html
    assert f"<tr class=chosen><td>0</td><td>tiny-vit</td><td>{front[0].genome}</td>" in html
    summary = json.loads(files["json"].read_text())
    assert [p["genome"] for p in summary["pareto"]] == [t.genome for t in front]
    assert summary["chosen"]["genome"] == finished_run.chosen.genome
    markdown = files["markdown"].read_text()
    assert f"**{front[0].genome}**" in markdown
    assert all(t.test_accuracy is not None for t in front)


def test_report_command_rerenders(finished_run: Any, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import edgekit.cli as cli

    modules = tuple(dict.fromkeys((*cli.SUBCOMMAND_MODULES, "edgekit.cli.search",
                                   "edgekit.cli.report")))  # fmt: skip
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", modules)
    finished_run.report["html"].unlink()
    assert cli.main(["-q", "report", str(finished_run.run_dir)]) == 0
    assert finished_run.report["html"].is_file()
    out = capsys.readouterr().out
    assert finished_run.chosen.genome in out and "report.html" in out
    assert cli.main(["-q", "report", str(finished_run.run_dir / "missing")]) == 1


def test_random_strategy_uses_the_same_budget_and_evaluations(
    tmp_path: Path, splits: Splits, supernet: torch.nn.Module
) -> None:
    result = _search(tmp_path / "random", splits, supernet, strategy="random", evaluations=8)
    assert len(result.trials) == 8
    assert all(t.arena_bytes <= result.budget.sram_bytes for t in result.trials)
    assert np.all([t.generation == 0 for t in result.trials])


def test_search_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import edgekit.cli as cli
    from edgekit.data import load_dataset
    from edgekit.training import train_supernet

    data = synthetic_splits(train=240, held_out=0)
    np.savez(tmp_path / "bands.npz", x=data.train.x, y=data.train.y)
    splits = load_dataset(tmp_path / "bands.npz")
    space = get_space("tiny-vit", num_classes=4, in_channels=1)
    checkpoint = tmp_path / "supernet.pt"
    train_supernet(space, splits, epochs=1, checkpoint_path=checkpoint, batch_size=64,
                   num_random=0, num_threads=1, val_samples=16, recalibrate_batches=1)  # fmt: skip
    modules = tuple(dict.fromkeys((*cli.SUBCOMMAND_MODULES, "edgekit.cli.search",
                                   "edgekit.cli.report")))  # fmt: skip
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", modules)
    command = ["-q", "search", "--space", "tiny-vit", "--board", BOARD, "--sram", SRAM,
               "--data", str(tmp_path / "bands.npz"), "--out", str(tmp_path / "run"),
               "--supernet", str(checkpoint), "--evaluations", "6", "--population", "4",
               "--no-export", "--threads", "1"]  # fmt: skip
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert "chosen: tiny-vit" in out and "report.html" in out
    assert cli.main(command) == 1  # the folder holds a run now: --resume or another --out
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main([*command, "--resume"]) == 0
    # Bad final-training options fail before any work, naming the value.
    elsewhere = [*command[:command.index("--out") + 1], str(tmp_path / "other"),
                 *command[command.index("--out") + 2 :]]  # fmt: skip
    assert cli.main([*elsewhere, "--scratch-epochs", "-1"]) == 1
    assert "scratch_epochs=-1" in capsys.readouterr().err
    assert cli.main([*elsewhere, "--device", "tpu"]) == 1
    assert "tpu" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_demo_end_to_end_on_a_folder_from_an_older_edgekit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgekit demo` (1 supernet epoch, 2 evaluations) on a folder whose checkpoint lacks
    weights the space gained since: it keeps that folder and starts afresh beside it."""
    from edgekit import cli
    from edgekit.data import load_dataset
    from edgekit.spaces import get_space
    from edgekit.training import recipe, train_supernet
    from edgekit.training.checkpoint import read_checkpoint, save_checkpoint

    out = tmp_path / "demo"
    checkpoint = out / "tiny-cnn-supernet.pt"
    digits = load_dataset("digits", seed=0)
    space = get_space("tiny-cnn", num_classes=digits.num_classes, in_channels=1)
    # What the demo's first run leaves (same settings), saved before fused blocks existed.
    train_supernet(space, digits, checkpoint_path=checkpoint, seed=0, **{**recipe(space.name),
                   "epochs": 1})  # fmt: skip
    payload = read_checkpoint(checkpoint)
    payload["supernet"] = {k: v for k, v in payload["supernet"].items() if ".fused." not in k}
    save_checkpoint(payload, checkpoint)
    # A board with a 32 KiB arena budget: random candidates for the default board can take
    # minutes to fine-tune and export on 2 cores (a stride-1 first stage at 32 x 32).
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    default_board = Path(__file__).parents[1] / "device_profiles" / "stm32f746g-disco.toml"
    (profiles / "small-board.toml").write_text(
        default_board.read_text().replace('sram_bytes = "320KiB"', 'sram_bytes = "80KiB"')
    )
    command = ["demo", "--epochs", "1", "--evaluations", "2", "--out", str(out),
               "--board", "small-board", "--profiles", str(profiles)]  # fmt: skip
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert "starting afresh" in printed and "chosen:" in printed
    assert "TFLite Micro arena measured" in printed
    (kept,) = tmp_path.glob("demo-old-*")
    assert (kept / "tiny-cnn-supernet.pt").is_file() and checkpoint.is_file()
