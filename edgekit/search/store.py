"""A search run's folder: the append-only trial store, the run lock and ``run.json``.

``trials.jsonl`` holds one JSON object per line, appended and fsync'd as each piece of work
finishes, never rewritten. A ``kill -9`` can leave at most one torn (unterminated) last line;
readers ignore it and the next writer cuts it off before appending. Record kinds:

- ``"trial"``: one candidate, ``status`` ``"evaluated"`` (accuracy measured), ``"over_budget"``
  (rejected by the memory / latency model before any accuracy work) or ``"screened_out"``
  (feasible, but the accuracy predictor ranked it below the generation's cut);
- ``"test"``: test-split accuracy of a Pareto point (for the final report only);
- ``"finetune"``: validation accuracy of a chosen model before and after fine-tuning;
- ``"trained"``: a chosen model trained on its own from fresh weights (``scratch_epochs``):
  epochs, seconds, validation accuracy;
- ``"export"``: a deployment bundle written for a chosen model, with its measured figures.

``.lock`` is held with ``flock`` for the whole run, so a second search on the same folder fails
at once instead of interleaving its trials; the kernel releases it when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.search.errors import SearchError

logger = logging.getLogger(__name__)

TRIALS_FILE = "trials.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUN_FORMAT = "edgekit-search-run"
RUN_VERSION = 1


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of a trial store (a torn last line is ignored)."""
    records, _ = _parse(Path(path))
    return records


def _parse(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, byte length of the complete lines) of ``path`` (empty when missing)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.warning(
            "%s: ignoring a torn last line (%d bytes; a run was killed mid-write)",
            path, len(data) - complete,
        )  # fmt: skip
    records = []
    for number, line in enumerate(data[:complete].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SearchError(f"{path}: line {number} is not a JSON record ({e})") from e
        if not isinstance(record, dict) or "kind" not in record:
            raise SearchError(f"{path}: line {number} is not a trial-store record")
        records.append(record)
    return records, complete


class TrialStore:
    """Append-only JSONL records, each fsync'd before :meth:`append` returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records, complete = _parse(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        if self._file.tell() > complete:
            self._file.truncate(complete)
            self._file.seek(complete)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` exclusively; raise SearchError at once if another process (or
    another open of it in this one) holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise SearchError(
                f"{str(run_dir)!r} is in use by another search (pid {holder}); wait for it to "
                "finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run.json`` of a search run folder; SearchError when it is missing or not one."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise SearchError(f"{str(run_dir)!r} is not a search run (no {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SearchError(f"{path}: cannot read the run description ({e})") from e
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise SearchError(f"{path} is not an edgekit search run description")
    return data


def check_same_settings(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Raise SearchError naming the first setting ``--resume`` would change."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise SearchError(
                f"cannot resume {str(run_dir)!r}: it was started with {key}={saved.get(key)!r}, "
                f"got {key}={current.get(key)!r}; use the same settings or another --out"
            )


__all__ = [
    "RUN_FILE",
    "TRIALS_FILE",
    "TrialStore",
    "check_same_settings",
    "read_records",
    "read_run",
    "run_lock",
    "write_json_atomic",
]
