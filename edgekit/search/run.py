"""``run_search``: data and a board in, searched, fine-tuned and exported models out.

Phases of a run (folder ``out``; every phase is recorded, so ``resume=True`` after a crash or
``kill -9`` continues where the run stopped):

1. lock the folder, check or write ``run.json`` (settings), open the trial store;
2. per space, the early-exit initial population: fail fast, before any training, when no
   config fits the budgets;
3. per space, the supernet (given, or trained / resumed at ``supernets/<space>.pt``);
4. per space, the search (:class:`~edgekit.search.strategy.SpaceSearch`);
5. test accuracy of the Pareto points (for the report only), the chosen model per space
   (highest validation accuracy), fine-tuned with distillation (or, with ``scratch_epochs``,
   trained on its own from fresh weights) and exported as a bundle under ``models/<space>/``;
   an export over the budgets (the config-based flash is a model of the file's layout, not
   exact) is passed over for the next choice, exported to
   ``models/<space>-choice2/`` and so on;
6. the report (``report/``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit.export.pipeline import QAT_MODES
from edgekit.search.budget import Budget
from edgekit.search.errors import ImpossibleBudgetError, SearchError
from edgekit.search.objectives import SUPERNET_SUBNETS, subnet_sampler
from edgekit.search.store import (
    RUN_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    TRIALS_FILE,
    TrialStore,
    check_same_settings,
    read_run,
    run_lock,
    write_json_atomic,
)
from edgekit.search.strategy import SearchSettings, SpaceSearch
from edgekit.search.trials import (
    EXPORT_ATTEMPTS,
    Trial,
    choose,
    evaluated_trials,
    export_arena,
    export_fits,
    misfits,
    pareto_front,
)

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekit.data.splits import Splits
    from edgekit.profiles import DeviceProfile
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
TEST_POINTS_PER_SPACE = 20  # Pareto points per space whose test accuracy the report shows


@dataclass
class SearchResult:
    """What :func:`run_search` returns.

    ``trials``: every evaluated trial (all spaces); ``pareto``: their non-dominated set, best
    validation accuracy first; ``chosen``: the model to deploy (``pareto[0]``); ``exports``:
    per space, the bundle of that space's chosen model with its measured figures (see
    :func:`edgekit.search.objectives.export_subnet`); ``summaries``: per-space search
    statistics; ``report``: the report files.
    """

    run_dir: Path
    board: str
    budget: Budget
    trials: list[Trial]
    pareto: list[Trial]
    chosen: Trial | None
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def chosen_export(self) -> dict[str, Any] | None:
        """The export of the overall chosen model (None when exporting was off)."""
        return None if self.chosen is None else self.exports.get(self.chosen.space)


def _space_names(space: str | Sequence[str]) -> list[str]:
    from edgekit.spaces import list_spaces

    known = list_spaces()
    names = known if space == "all" else [space] if isinstance(space, str) else list(space)
    for name in names:
        if name not in known:
            raise SearchError(f"unknown space {name!r}; expected one of {known} or 'all'")
    if not names:
        raise SearchError("no space to search")
    return list(dict.fromkeys(names))


def _supernet_for(
    supernet: Any, names: list[str]
) -> dict[str, Any]:
    """Map each searched space to its supernet source (None: train one)."""
    if supernet is None:
        return dict.fromkeys(names)
    if isinstance(supernet, Mapping):
        unknown = sorted(set(supernet) - set(names))
        if unknown:
            raise SearchError(f"supernet given for space(s) {unknown} that are not searched")
        return {name: supernet.get(name) for name in names}
    if len(names) > 1:
        raise SearchError(
            "one supernet for several spaces: pass a mapping {space: checkpoint or module}"
        )
    return {names[0]: supernet}


def _describe_source(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, str | os.PathLike):
        return str(Path(source).resolve())
    return "in-memory"


def _load_data(data: Any, seed: int, max_per_split: int | None) -> tuple[Splits, str]:
    from edgekit.data import Splits, load_dataset

    if isinstance(data, Splits):
        return data, f"in-memory:{data.name}"
    return load_dataset(data, seed=seed, max_per_split=max_per_split), str(data)


def run_search(
    space: str | Sequence[str] = "tiny-cnn",
    board: str | DeviceProfile = "stm32f746g-disco",
    data: str | os.PathLike[str] | Splits = "digits",
    out: str | os.PathLike[str] = "runs/search",
    *,
    sram: int | str | None = None,
    flash: int | str | None = None,
    latency_ms: float | None = None,
    seed: int = 0,
    resume: bool = False,
    strategy: str = "nsga2",
    evaluations: int = 60,
    population: int = 16,
    offspring: int | None = None,
    predictor: bool = True,
    eval_samples: int | None = None,
    recalibrate_batches: int = 10,
    supernet: Any = None,
    supernet_epochs: int | None = None,
    supernet_subnets: str = "fitting",
    finetune_epochs: int = 3,
    scratch_epochs: int = 0,
    export: bool = True,
    qat: str = "auto",
    max_per_split: int | None = None,
    profiles: Sequence[str | os.PathLike[str]] = (),
    num_threads: int | None = None,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> SearchResult:
    """Search ``space`` (a name, a list, or ``"all"``) for the best models that fit ``board``.

    Budgets default to the board's (SRAM and flash left after the firmware's reservation);
    ``sram`` / ``flash`` (bytes or ``"256KiB"``) and ``latency_ms`` replace them. ``data`` is a
    dataset spec for :func:`edgekit.data.load_dataset` or loaded :class:`Splits`. ``supernet``
    is a checkpoint path or a module to reuse (a mapping space -> either for several spaces);
    by default one is trained per space with its recipe (``supernet_epochs`` overrides the
    epochs) on the subnets that fit the budgets (``supernet_subnets``: see
    :func:`edgekit.search.objectives.subnet_sampler`). ``evaluations`` is the number of
    accuracy evaluations per space. The chosen model of every space is fine-tuned for
    ``finetune_epochs`` and exported unless ``export=False``; with ``scratch_epochs`` it is
    instead trained on its own from fresh weights for that many epochs, with the supernet's
    recipe (:func:`edgekit.training.train_subnet`): slower, and on CIFAR-10 ~3 points more
    accurate than fine-tuning (docs/BENCHMARKS.md). ``device`` ("cpu", "cuda") is where the
    supernet and that final training run; the search and the export run on the CPU.

    A folder that holds a run needs ``resume=True`` (with the same settings) to continue it;
    a folder in use by another search is refused. Raises ImpossibleBudgetError when nothing
    fits, before any training.
    """
    from edgekit.profiles import DeviceProfile, load_profile

    started = time.perf_counter()
    names = _space_names(space)
    profile = board if isinstance(board, DeviceProfile) else load_profile(board, profiles)
    budget = Budget.for_board(profile, sram=sram, flash=flash, latency_ms=latency_ms)
    settings = SearchSettings(
        strategy=strategy, evaluations=evaluations, population=population,
        offspring=offspring, predictor=predictor, eval_samples=eval_samples,
        recalibrate_batches=recalibrate_batches, seed=seed,
    )  # fmt: skip
    if qat not in QAT_MODES:
        raise SearchError(f"qat={qat!r}: expected one of {QAT_MODES}")
    if supernet_subnets not in SUPERNET_SUBNETS:
        raise SearchError(
            f"supernet_subnets={supernet_subnets!r}: expected one of {SUPERNET_SUBNETS}"
        )
    if finetune_epochs < 0:
        raise SearchError(f"finetune_epochs={finetune_epochs!r}: expected 0 or more")
    if scratch_epochs < 0:
        raise SearchError(f"scratch_epochs={scratch_epochs!r}: expected 0 or more")
    if device != "cpu":
        from edgekit.training import training_device

        training_device(device)  # a missing GPU fails here, not after the search
    sources = _supernet_for(supernet, names)
    run_dir = Path(out)
    with run_lock(run_dir):
        splits, data_spec = _load_data(data, seed, max_per_split)
        description = {
            "spaces": names,
            "board": profile.name,
            "board_file": str(profile.source),
            "budget": budget.to_dict(),
            "data": data_spec,
            "data_sizes": [len(splits.train), len(splits.val), len(splits.test)],
            "max_per_split": max_per_split,
            "search": settings.to_dict(),
            "supernets": {name: _describe_source(src) for name, src in sources.items()},
            "supernet_epochs": supernet_epochs,
            # Only a supernet trained here has subnets to choose.
            "supernet_subnets": (
                supernet_subnets if any(src is None for src in sources.values()) else None
            ),
            "finetune_epochs": finetune_epochs,
            "scratch_epochs": scratch_epochs,
            "export": export,
            "qat": qat,
        }
        _open_run(run_dir, description, resume)
        with TrialStore(run_dir / TRIALS_FILE) as store:
            return _Run(
                run_dir, names, profile, budget, settings, splits, store, sources, description,
                num_threads, device, progress, started,
            ).execute()  # fmt: skip


def _open_run(run_dir: Path, description: dict[str, Any], resume: bool) -> None:
    path = run_dir / RUN_FILE
    if path.exists():
        if not resume:
            raise SearchError(
                f"{str(run_dir)!r} already holds a search; pass --resume to continue it or "
                "choose another --out"
            )
        saved = dict(read_run(run_dir).get("settings", {}))
        if "supernet_subnets" not in saved:  # runs from before the choice trained every subnet
            trained = any(src is None for src in saved.get("supernets", {}).values())
            saved["supernet_subnets"] = "space" if trained else None
        saved.setdefault("scratch_epochs", 0)  # runs from before training alone was offered
        check_same_settings(saved, description, run_dir)
        logger.info("resuming the search in %s", run_dir)
        return
    if resume and (run_dir / TRIALS_FILE).exists():
        raise SearchError(f"{str(run_dir)!r} has trials but no {RUN_FILE}; cannot resume it")
    write_json_atomic(
        path,
        {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "edgekit_version": __version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "settings": description,
        },
    )


@dataclass
class _Run:
    run_dir: Path
    names: list[str]
    board: DeviceProfile
    budget: Budget
    settings: SearchSettings
    splits: Splits
    store: TrialStore
    sources: dict[str, Any]
    description: dict[str, Any]
    num_threads: int | None
    device: str
    progress: ProgressCallback | None
    started: float
    seconds: dict[str, float] = field(default_factory=dict)

    def _report_progress(self, done: int, total: int, status: str) -> None:
        if self.progress is not None:
            self.progress(done, total, status)

    def execute(self) -> SearchResult:
        from edgekit.spaces import get_space
        from edgekit.training import limit_threads

        limit_threads(self.num_threads)
        channels = self.splits.input_shape[2]
        searches: dict[str, SpaceSearch] = {}
        impossible: list[ImpossibleBudgetError] = []
        for name in self.names:
            space = get_space(name, num_classes=self.splits.num_classes, in_channels=channels)
            search = SpaceSearch(space, self.board, self.budget, self.settings, self.store,
                                 progress=self._report_progress)  # fmt: skip
            try:
                search.prepare()
            except ImpossibleBudgetError as e:
                impossible.append(e)
                logger.warning("%s", e)
                continue
            searches[name] = search
        if not searches:
            if len(impossible) == 1:
                raise impossible[0]
            smallest = {k: v for e in impossible for k, v in e.smallest.items()}
            raise ImpossibleBudgetError("; ".join(str(e) for e in impossible), smallest)
        self.seconds["prepare"] = time.perf_counter() - self.started

        supernets: dict[str, tuple[nn.Module, str]] = {}
        for name, search in searches.items():
            phase = time.perf_counter()
            supernets[name] = self._supernet(search.space)
            self.seconds[f"supernet:{name}"] = time.perf_counter() - phase
            phase = time.perf_counter()
            search.run(self._accuracy_fn(search.space, supernets[name][0]))
            self.seconds[f"search:{name}"] = time.perf_counter() - phase
            self._summary(search)

        trials = evaluated_trials(self.store.records)
        trials = [t for t in trials if t.space in searches]
        self._test_accuracies(searches, supernets, trials)
        trials = [t for t in evaluated_trials(self.store.records) if t.space in searches]
        exports: dict[str, dict[str, Any]] = {}
        if self.description["export"]:
            for name, search in searches.items():
                phase = time.perf_counter()
                record = self._export_fitting(search.space, supernets[name],
                                              [t for t in trials if t.space == name])  # fmt: skip
                if record is not None:
                    exports[name] = record
                    self.seconds[f"export:{name}"] = time.perf_counter() - phase
        from edgekit.search.report import render_report

        report = render_report(self.run_dir)
        self.seconds["total"] = time.perf_counter() - self.started
        return SearchResult(
            run_dir=self.run_dir,
            board=self.board.name,
            budget=self.budget,
            trials=trials,
            pareto=pareto_front(trials),
            chosen=choose(trials, misfits(self.store.records, self.budget)),
            exports=exports,
            summaries={name: dict(search.stats) for name, search in searches.items()},
            report=report,
            seconds={k: round(v, 3) for k, v in self.seconds.items()},
        )

    # --- phases -------------------------------------------------------------------------------
    def _supernet(self, space: SearchSpace) -> tuple[nn.Module, str]:
        from edgekit.search.objectives import prepare_supernet

        def report(done: int, total: int, status: str) -> None:
            self._report_progress(done, total, f"{space.name} supernet: {status}")

        return prepare_supernet(
            space,
            self.splits,
            self.sources[space.name],
            self.run_dir / "supernets" / f"{space.name}.pt",
            epochs=self.description["supernet_epochs"],
            seed=self.settings.seed,
            progress=report,
            num_threads=self.num_threads,
            device=self.device,
            sampler=lambda: subnet_sampler(
                space, self.board, self.budget, self.description["supernet_subnets"],
                seed=self.settings.seed,
            ),
        )

    def _accuracy_fn(self, space: SearchSpace, supernet: nn.Module) -> Callable[[Any], float]:
        from edgekit.search.objectives import evaluate_accuracy, same_function

        splits, s = self.splits, self.settings
        validation = splits.val if len(splits.val) else splits.test
        if not len(splits.val):
            logger.warning("dataset %s has no validation split; ranking on test", splits.name)

        measured: dict[ArchConfig, float] = {}

        def accuracy(cfg: ArchConfig) -> float:
            key = same_function(space, cfg)  # configs differing only in patches share it
            if key not in measured:
                measured[key] = evaluate_accuracy(
                    space, supernet, cfg, validation, recalibrate_with=splits.train,
                    batches=s.recalibrate_batches, max_samples=s.eval_samples, seed=s.seed,
                )  # fmt: skip
            return measured[key]

        return accuracy

    def _summary(self, search: SpaceSearch) -> None:
        done = {(r.get("space")) for r in self.store.records if r.get("kind") == "summary"}
        if search.space.name in done:
            return
        self.store.append({
            "kind": "summary",
            "space": search.space.name,
            "stats": search.stats,
            "smallest": search.smallest_footprint(),
        })  # fmt: skip

    def _test_accuracies(
        self,
        searches: dict[str, SpaceSearch],
        supernets: dict[str, tuple[nn.Module, str]],
        trials: list[Trial],
    ) -> None:
        from edgekit.search.objectives import evaluate_accuracy

        if not len(self.splits.test):
            return
        done = {(r["space"], r["genome"]) for r in self.store.records if r.get("kind") == "test"}
        for name, search in searches.items():
            front = pareto_front([t for t in trials if t.space == name])[:TEST_POINTS_PER_SPACE]
            for i, trial in enumerate(front):
                self._report_progress(i, len(front), f"{name}: test accuracy of Pareto points")
                if trial.key in done:
                    continue
                accuracy = evaluate_accuracy(
                    search.space, supernets[name][0], search.space.from_dict(trial.config),
                    self.splits.test, recalibrate_with=self.splits.train,
                    batches=self.settings.recalibrate_batches, max_samples=None,
                    seed=self.settings.seed,
                )  # fmt: skip
                self.store.append({"kind": "test", "space": name, "genome": trial.genome,
                                   "test_accuracy": accuracy})  # fmt: skip

    def _export_fitting(
        self, space: SearchSpace, supernet: tuple[nn.Module, str], trials: list[Trial]
    ) -> dict[str, Any] | None:
        """Export the chosen model; should its export not fit the budgets after all (the
        memory model equals our exporter's output, but a TensorFlow that converts
        differently may not; see :func:`misfits`), pass it over and export the next choice,
        at most ``EXPORT_ATTEMPTS`` times. Returns the last export made."""
        passed_over = {key for key in misfits(self.store.records, self.budget)
                       if key[0] == space.name}  # fmt: skip
        record = None
        while (chosen := choose(trials, passed_over)) is not None:
            # A passed-over bundle stays where it is (its record names it).
            folder = f"{space.name}-choice{len(passed_over) + 1}" if passed_over else space.name
            record = self._export(space, supernet, chosen, self.run_dir / "models" / folder)
            if export_fits(record, self.budget) or len(passed_over) == EXPORT_ATTEMPTS - 1:
                break
            logger.warning(
                "%s: the exported %s does not fit %s (flash %d B, estimated %d B; arena %d B, "
                "estimated %d B): the config-based memory model was off for it (this "
                "TensorFlow converts differently, see docs/BENCHMARKS.md); "
                "passing it over", space.name, chosen.genome, self.budget.describe(),
                record["flash_bytes"], chosen.flash_bytes, export_arena(record),
                chosen.arena_bytes,
            )  # fmt: skip
            passed_over.add(chosen.key)
        return record

    def _records_of(
        self, kind: str, space: SearchSpace, chosen: Trial
    ) -> Iterator[dict[str, Any]]:
        """The stored records of ``kind`` (export, finetune, trained) for ``chosen``, oldest
        first: what a resumed run reuses."""
        return (r for r in self.store.records if r.get("kind") == kind
                and r["space"] == space.name and r["genome"] == chosen.genome)  # fmt: skip

    def _export(
        self, space: SearchSpace, supernet: tuple[nn.Module, str], chosen: Trial, out_dir: Path
    ) -> dict[str, Any]:
        for record in self._records_of("export", space, chosen):
            if Path(record["files"]["manifest"]).is_file():
                logger.info("%s: reusing the exported bundle %s", space.name, record["bundle"])
                return record
        alone = self.description["scratch_epochs"] > 0
        if alone:
            module, checkpoint = self._trained_alone(space, supernet, chosen)
        else:
            module, checkpoint = self._finetuned(space, supernet, chosen)

        def report(done: int, total: int, status: str) -> None:
            self._report_progress(done, total, f"{space.name} export: {status}")

        from edgekit.search.objectives import export_subnet

        summary = export_subnet(
            space, module, space.from_dict(chosen.config), self.splits, out_dir,
            board=self.board, seed=self.settings.seed,
            qat=self.description["qat"], checkpoint_path=checkpoint, progress=report,
            recalibrate=not alone,  # trained alone, its BatchNorm statistics are its own
        )  # fmt: skip
        record = {"kind": "export", "space": space.name, "genome": chosen.genome, **summary}
        self.store.append(record)
        return record

    def _finetuned(
        self, space: SearchSpace, supernet: tuple[nn.Module, str], chosen: Trial
    ) -> tuple[nn.Module, str | None]:
        """The weights to export: the fine-tuned copy when fine-tuning helped on validation."""
        from edgekit.search.objectives import (
            evaluate_accuracy,
            finetune_subnet,
            load_module_state,
            save_module_state,
            supernet_teacher,
        )

        module, where = supernet
        checkpoint = None if where == "in-memory" else where
        epochs = self.description["finetune_epochs"]
        if epochs == 0:
            return module, checkpoint
        path = self.run_dir / "finetuned" / f"{space.name}.pt"
        for record in self._records_of("finetune", space, chosen):
            if not record["kept"]:
                return module, checkpoint
            if path.is_file():
                return load_module_state(space, path), str(path)
        cfg = space.from_dict(chosen.config)

        def report(done: int, total: int, status: str) -> None:
            self._report_progress(done, total, f"{space.name}: {status}")

        tuned = finetune_subnet(space, module, cfg, self.splits, epochs=epochs,
                                seed=self.settings.seed, teacher=supernet_teacher(space, where),
                                progress=report)  # fmt: skip
        validation = self.splits.val if len(self.splits.val) else self.splits.test
        after = evaluate_accuracy(
            space, tuned, cfg, validation, recalibrate_with=self.splits.train,
            batches=self.settings.recalibrate_batches, max_samples=None, seed=self.settings.seed,
        )  # fmt: skip
        before = evaluate_accuracy(
            space, module, cfg, validation, recalibrate_with=self.splits.train,
            batches=self.settings.recalibrate_batches, max_samples=None, seed=self.settings.seed,
        )  # fmt: skip
        kept = after >= before
        if kept:
            save_module_state(tuned, path)
        self.store.append({"kind": "finetune", "space": space.name, "genome": chosen.genome,
                           "epochs": epochs, "val_accuracy_before": before,
                           "val_accuracy_after": after, "kept": kept})  # fmt: skip
        logger.info(
            "%s: fine-tuning %s: val accuracy %.2f%% -> %.2f%% (%s)", space.name, chosen.genome,
            100 * before, 100 * after, "kept" if kept else "discarded",
        )  # fmt: skip
        return (tuned, str(path)) if kept else (module, checkpoint)

    def _trained_alone(
        self, space: SearchSpace, supernet: tuple[nn.Module, str], chosen: Trial
    ) -> tuple[nn.Module, str]:
        """The weights to export: ``chosen`` trained on its own from fresh weights with the
        supernet's recipe for ``scratch_epochs`` (kept under ``trained/``, so a resumed run
        trains it once)."""
        from edgekit.search.objectives import (
            evaluate_accuracy,
            load_module_state,
            save_module_state,
        )
        from edgekit.training import TrainSettings, read_checkpoint, recipe, train_subnet

        path = self.run_dir / "trained" / f"{space.name}-{chosen.genome}.pt"
        if path.is_file() and any(self._records_of("trained", space, chosen)):
            return load_module_state(space, path), str(path)
        where = supernet[1]
        # The supernet's recipe: what its checkpoint recorded, or the space's default.
        options = (
            recipe(space.name) if where == "in-memory" else read_checkpoint(where)["settings"]
        )
        options |= {"epochs": self.description["scratch_epochs"], "seed": self.settings.seed}
        settings = TrainSettings(**options)
        cfg = space.from_dict(chosen.config)

        def report(done: int, total: int, status: str) -> None:
            self._report_progress(done, total, f"{space.name} {chosen.genome}: {status}")

        started = time.perf_counter()
        module = train_subnet(space, cfg, self.splits, settings, device=self.device,
                              progress=report)  # fmt: skip
        seconds = time.perf_counter() - started
        validation = self.splits.val if len(self.splits.val) else self.splits.test
        accuracy = evaluate_accuracy(
            space, module, cfg, validation, recalibrate_with=None,
            batches=self.settings.recalibrate_batches, max_samples=None, seed=self.settings.seed,
        )  # fmt: skip
        save_module_state(module, path)
        self.store.append({"kind": "trained", "space": space.name, "genome": chosen.genome,
                           "epochs": settings.epochs, "val_accuracy": accuracy,
                           "train_seconds": round(seconds, 1), "device": self.device})  # fmt: skip
        logger.info(
            "%s: %s trained on its own for %d epochs in %.0f s: val accuracy %.2f%%",
            space.name, chosen.genome, settings.epochs, seconds, 100 * accuracy,
        )  # fmt: skip
        return module, str(path)


# --- re-export one Pareto point ------------------------------------------------------------
def export_point(
    run_dir: str | os.PathLike[str],
    genome: str | None = None,
    *,
    rank: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    data: Splits | None = None,
    supernet: Any = None,
    finetune_epochs: int | None = None,
    qat: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune and export one Pareto point of a finished run: by ``genome``, or by ``rank``
    in the Pareto table (0 = the chosen model). Data, board, seed and fine-tuning follow the
    run's settings unless given. The bundle goes to ``out_dir`` (default
    ``<run>/models/<space>-<rank>``) and is recorded in the run's trial store."""
    from edgekit.profiles import load_profile
    from edgekit.search.objectives import (
        export_subnet,
        finetune_subnet,
        prepare_supernet,
        supernet_teacher,
    )
    from edgekit.spaces import get_space

    run_dir = Path(run_dir)
    saved = read_run(run_dir)["settings"]
    with run_lock(run_dir), TrialStore(run_dir / TRIALS_FILE) as store:
        front = pareto_front(evaluated_trials(store.records))
        if genome is not None:
            picked = [t for t in front if t.genome == genome]
            if not picked:
                raise SearchError(f"genome {genome!r} is not on the Pareto front of {run_dir}")
            point, rank = picked[0], front.index(picked[0])
        else:
            rank = 0 if rank is None else rank
            if not 0 <= rank < len(front):
                raise SearchError(f"rank={rank}: the Pareto front has {len(front)} point(s)")
            point = front[rank]
        seed = saved["search"]["seed"]
        if saved["data"].startswith("in-memory:") and data is None:
            raise SearchError(f"{str(run_dir)!r} searched in-memory data; pass data=")
        splits = data if data is not None else _load_data(saved["data"], seed,
                                                          saved["max_per_split"])[0]  # fmt: skip
        space = get_space(point.space, num_classes=splits.num_classes,
                          in_channels=splits.input_shape[2])  # fmt: skip
        source = supernet
        if source is None:
            saved_source = saved["supernets"].get(point.space)
            source = run_dir / "supernets" / f"{point.space}.pt"
            if saved_source not in (None, "in-memory"):
                source = Path(saved_source)
            elif saved_source == "in-memory" or not source.is_file():
                raise SearchError(
                    f"no supernet checkpoint for {point.space} in {str(run_dir)!r}; pass supernet="
                )
        module, where = prepare_supernet(space, splits, source, Path(str(source)), epochs=None,
                                         seed=seed)  # fmt: skip
        cfg = space.from_dict(point.config)
        epochs = saved["finetune_epochs"] if finetune_epochs is None else finetune_epochs
        if epochs:
            module = finetune_subnet(space, module, cfg, splits, epochs=epochs, seed=seed,
                                     teacher=supernet_teacher(space, where))  # fmt: skip
        target = Path(out_dir) if out_dir is not None else (
            run_dir / "models" / f"{point.space}-{rank}")  # fmt: skip
        summary = export_subnet(
            space, module, cfg, splits, target,
            board=load_profile(Path(saved["board_file"])), seed=seed, qat=qat or saved["qat"],
            checkpoint_path=None if where == "in-memory" else where, progress=progress,
        )  # fmt: skip
        # Marked, so that a re-export over the budgets does not change the run's choice.
        record = {"kind": "export", "space": point.space, "genome": point.genome,
                  "reexport": True, **summary}  # fmt: skip
        store.append(record)
    from edgekit.search.report import render_report

    render_report(run_dir)
    return record


def load_result(run_dir: str | os.PathLike[str]) -> SearchResult:
    """A :class:`SearchResult` rebuilt from a run folder (trials, Pareto set, exports)."""
    from edgekit.search.report import report_files
    from edgekit.search.store import read_records

    run_dir = Path(run_dir)
    saved = read_run(run_dir)["settings"]
    records = read_records(run_dir / TRIALS_FILE)
    trials = evaluated_trials(records)
    budget = Budget.from_dict(saved["budget"])
    passed_over = misfits(records, budget)
    chosen_per_space = {
        space: choose([t for t in trials if t.space == space], passed_over)
        for space in saved["spaces"]
    }
    exports = {
        r["space"]: r
        for r in records
        if r.get("kind") == "export"
        and chosen_per_space.get(r["space"]) is not None
        and r["genome"] == chosen_per_space[r["space"]].genome  # type: ignore[union-attr]
    }
    summaries = {r["space"]: r["stats"] for r in records if r.get("kind") == "summary"}
    return SearchResult(
        run_dir=run_dir,
        board=saved["board"],
        budget=budget,
        trials=trials,
        pareto=pareto_front(trials),
        chosen=choose(trials, passed_over),
        exports=exports,
        summaries=summaries,
        report=report_files(run_dir),
    )


__all__ = ["SearchResult", "export_point", "load_result", "run_search"]
