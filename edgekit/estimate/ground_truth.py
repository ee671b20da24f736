"""Ground truth: the tensor arena the real TFLite Micro interpreter needs for a model.

The ``tflite-micro`` Python package (an x86-64 build with reference kernels and the
``RecordingMicroAllocator``) is driven in a child process: a failed allocation inside TFLM can
end in a segmentation fault rather than an exception, and its allocation report is printed by
C code to file descriptor 2. The child answers one request per line, so a bisection over
``arena_size`` costs one interpreter construction per step, not one Python start-up.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.estimate.errors import TflmRuntimeError
from edgekit.estimate.tflite_file import read_model_bytes

logger = logging.getLogger(__name__)

# Above this an arena is not a microcontroller arena; stop searching and report failure.
_MAX_ARENA_BYTES = 1 << 30

# The child: `try N` answers ok/fail (allocate + invoke with arena_size=N); `report N` answers
# the RecordingMicroAllocator lines. fd 2 goes to a file so TFLM's own error prints are kept
# off the parent's terminal but can still be read back for the report.
_WORKER_SOURCE = r"""
import os, sys, tempfile
log = tempfile.TemporaryFile()
os.dup2(log.fileno(), 2)
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
def build(n):
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=n)
    interpreter.invoke()
    return interpreter
for line in sys.stdin:
    verb, size = line.split()
    start = log.seek(0, 2)
    try:
        interpreter = build(int(size))
    except Exception as error:
        log.seek(start)
        reason = log.read().decode(errors="replace").split() or str(error).split()
        print("fail " + " ".join(reason)[:400], flush=True)
        continue
    if verb == "report":
        start = log.seek(0, 2)
        interpreter.print_allocations()
        log.seek(start)
        sys.stdout.write(log.read().decode(errors="replace"))
    print("ok", flush=True)
"""


@dataclass(frozen=True)
class TflmMeasurement:
    """What the real interpreter uses for one model.

    ``arena_bytes`` is the smallest ``arena_size`` with which the interpreter allocates and
    invokes; ``head_bytes``/``tail_bytes``/``total_bytes`` and ``categories`` come from the
    RecordingMicroAllocator report at that size rounded up to the arena alignment.
    """

    arena_bytes: int
    head_bytes: int
    tail_bytes: int
    total_bytes: int
    categories: dict[str, int] = field(default_factory=dict)


class _Worker:
    """One child interpreter process; restarted when a request crashes it."""

    def __init__(self, model_path: Path) -> None:
        self._model_path = model_path
        self._process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE, str(self._model_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def ask(self, verb: str, arena_size: int) -> tuple[bool, list[str], str]:
        """Send one request; returns (succeeded, report lines, failure reason)."""
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(f"{verb} {arena_size}\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            self._process = None
            return False, [], "interpreter process died"
        lines: list[str] = []
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if line == "ok":
                return True, lines, ""
            if line.startswith("fail"):
                return False, lines, line[5:]
            lines.append(line)
        # The child died mid-request (TFLM dereferences a failed allocation): a failure.
        self._process.wait()
        self._process = None
        return False, lines, "interpreter crashed (failed allocation)"

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=30)
        self._process = None


def _is_out_of_memory(reason: str) -> bool:
    """Whether a TFLM failure message is about the arena being too small."""
    words = ("failed to allocate", "failed to resize", "too many buffers", "crashed")
    return any(word in reason.lower() for word in words)


def _parse_report(lines: list[str]) -> tuple[int, int, int, dict[str, int]]:
    totals: dict[str, int] = {}
    categories: dict[str, int] = {}
    for line in lines:
        if not line.startswith("[RecordingMicroAllocator]"):
            continue
        words = line.split()
        if words[1:3] == ["Arena", "allocation"]:
            totals[words[3]] = int(words[4])
        elif "' used " in line:
            name = line.split("'")[1]
            categories[name] = int(line.split("' used ")[1].split()[0])
    if set(totals) != {"total", "head", "tail"}:
        raise TflmRuntimeError(f"unexpected TFLM allocation report: {lines!r}")
    return totals["total"], totals["head"], totals["tail"], categories


def measure_tflm(
    model: bytes | Path | str, *, alignment: int = 16, expected: int | None = None
) -> TflmMeasurement:
    """Measure the arena of ``model`` with the tflite-micro interpreter: the smallest
    ``arena_size`` that allocates and invokes. ``expected`` (e.g. the memory model's estimate
    for this build) is only a starting point: when the interpreter runs with it and fails with
    one byte less, that is the answer after two interpreter builds; otherwise a bisection
    (about 18 builds) finds it."""
    data = read_model_bytes(model)
    with tempfile.TemporaryDirectory(prefix="edgekit_tflm_") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        worker = _Worker(path)
        try:
            high = _smallest_arena(worker, len(data), expected)
            aligned = -(-high // alignment) * alignment
            ok, lines, _ = worker.ask("report", aligned)
            if not ok:
                raise TflmRuntimeError(f"TFLite Micro failed at arena_size={aligned}")
        finally:
            worker.close()
    total, head, tail, categories = _parse_report(lines)
    logger.debug("TFLM arena for %d-byte model: minimum %d, report %d", len(data), high, total)
    return TflmMeasurement(high, head, tail, total, categories)


def _smallest_arena(worker: _Worker, model_bytes: int, expected: int | None) -> int:
    """Smallest arena size with which ``worker``'s interpreter runs (sizes are monotone)."""
    low = 0  # known to fail
    if expected is not None and expected > 1:
        if worker.ask("try", expected)[0]:
            if not worker.ask("try", expected - 1)[0]:
                return expected
            high = expected - 1
        else:
            low, high = expected, 2 * expected
    else:
        high = max(1 << 16, 4 * model_bytes)
    while True:
        ok, _, reason = worker.ask("try", high)
        if ok:
            break
        if not _is_out_of_memory(reason):
            raise TflmRuntimeError(f"TFLite Micro cannot run the model: {reason}")
        low, high = high, high * 2
        if high > _MAX_ARENA_BYTES:
            raise TflmRuntimeError(
                f"TFLite Micro cannot allocate this model even with a "
                f"{_MAX_ARENA_BYTES}-byte arena (unsupported op or type?)"
            )
    while high - low > 1:
        middle = (low + high) // 2
        if worker.ask("try", middle)[0]:
            high = middle
        else:
            low = middle
    return high


def measure_tflm_arena(model: bytes | Path | str) -> int:
    """Smallest ``arena_size`` with which the tflite-micro interpreter allocates and invokes."""
    return measure_tflm(model).arena_bytes
