"""What every benchmark script prints about the machine it ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int, *, tensorflow: bool = False) -> str:
    """Markdown lines with the date and the machine (cores, torch threads, versions)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = f"torch {torch.__version__} with {threads} thread(s)"
    if tensorflow:
        import tensorflow as tf

        versions += f", TensorFlow {tf.__version__}"
    return (
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='minutes')}\n"
        f"- machine: {cpu_name()}, {cores} cores available, {versions}, "
        f"Python {platform.python_version()}"
    )
