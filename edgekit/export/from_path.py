"""``export_from_path``: what ``edgekit export`` runs, from files on disk.

Accepted sources:

- a supernet checkpoint (``train-supernet``'s ``.pt``) plus ``config``: a genome string
  (``r32-w0.5-...``), config JSON text, or the path of a JSON file holding a config;
- a JSON file holding a config (``ArchConfig.to_dict()``; then ``checkpoint`` is required), or
  a record ``{"config": <config dict or genome>, "checkpoint": "<path>"}`` (a relative
  checkpoint path is relative to the JSON file's folder; the ``checkpoint`` argument
  overrides it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import CheckpointError, ConfigError
from edgekit.export.pipeline import ExportResult, ProgressCallback, export_model

if TYPE_CHECKING:
    from edgekit.export.sparse import SparseExportResult, SparseSettings
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {str(path)!r}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {e}") from e


def _is_json_file(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    with open(path, "rb") as f:
        return f.read(1).lstrip()[:1] == b"{"


def _split_record(data: Any, where: str) -> tuple[Any, str | None]:
    """(config part, checkpoint path or None) of a parsed JSON document."""
    if isinstance(data, dict) and "config" in data:
        checkpoint = data.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise ConfigError(f"{where}: 'checkpoint' must be a path string")
        return data["config"], checkpoint
    if isinstance(data, dict) and "space" in data:
        return data, None
    raise ConfigError(
        f"{where}: expected a config object with a 'space' key or "
        '{"config": ..., "checkpoint": "..."}'
    )


def config_part(value: Any, where: str) -> dict[str, Any] | str:
    """The config in ``value``: a dict as it is; JSON text or the path of a JSON file (a config
    or a ``{"config": ..., "checkpoint": ...}`` record) parsed; any other string is taken as a
    genome. ``where`` names the source in error messages."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a genome string, config JSON or a JSON file path")
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid config JSON ({e})") from e
        return config_part(_split_record(data, where)[0], where)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        return config_part(_split_record(_read_json(path), str(path))[0], str(path))
    return text


def _config(space: SearchSpace, value: Any, where: str) -> ArchConfig:
    """A config of ``space`` from a dict, JSON text, a JSON file path or a genome string."""
    part = config_part(value, where)
    return space.from_dict(part) if isinstance(part, dict) else space.decode(part)


def resolve_source(
    source: str | Path, config: str | None = None, checkpoint: str | Path | None = None
) -> tuple[Path, Any]:
    """(checkpoint path, unparsed config) from the CLI's positional ``source`` and options."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise CheckpointError(f"{str(source)!r} does not exist (expected a checkpoint or JSON)")
    if _is_json_file(source):
        config_value, recorded = _split_record(_read_json(source), str(source))
        if config is not None:
            raise ConfigError(f"{str(source)!r} already holds a config; drop --config")
        if checkpoint is None and recorded is None:
            raise CheckpointError(
                f"{str(source)!r} holds a config but no checkpoint; pass --checkpoint PATH"
            )
        if checkpoint is not None:
            return Path(checkpoint).expanduser(), config_value
        recorded_path = Path(recorded).expanduser()
        if not recorded_path.is_absolute():
            recorded_path = source.parent / recorded_path
        return recorded_path, config_value
    if checkpoint is not None:
        raise ConfigError(f"{str(source)!r} is a checkpoint; drop --checkpoint")
    if config is None:
        raise ConfigError(
            f"exporting from checkpoint {str(source)!r} needs --config "
            "(a genome string, config JSON or a JSON file)"
        )
    return source, config


def export_from_path(
    source: str | Path,
    board: str | None,
    out_dir: str | Path,
    *,
    config: str | None = None,
    checkpoint: str | Path | None = None,
    data_spec: str = "digits",
    seed: int | None = None,
    qat: str = "auto",
    sparse: bool | SparseSettings = False,
    profile_dirs: Sequence[str | Path] = (),
    progress: ProgressCallback | None = None,
) -> ExportResult | SparseExportResult:
    """Export one subnet of a trained supernet checkpoint to a bundle in ``out_dir``.

    ``source``/``config``/``checkpoint``: see the module docstring. ``board`` names a device
    profile (looked up with ``profile_dirs``) whose budgets the bundle is checked against, or
    ``None``. ``data_spec`` is the dataset (as for ``load_dataset``); ``seed`` its split seed,
    by default the checkpoint's training seed so that the test split is the held-out one.
    ``sparse``: XNNPACK sparse export instead (see ``export_model``).
    """
    from edgekit.data import load_dataset
    from edgekit.profiles import load_profile
    from edgekit.training import limit_threads, load_supernet

    profile = load_profile(board, profile_dirs) if board else None
    checkpoint_path, config_value = resolve_source(source, config, checkpoint)
    space, supernet, meta = load_supernet(checkpoint_path)
    cfg = _config(space, config_value, str(source))
    if seed is None:
        seed = int(meta.get("settings", {}).get("seed", 0))
    splits = load_dataset(data_spec, seed=seed, channels=space.in_channels)
    trained_on = meta.get("data", {}).get("name")
    if trained_on is not None and trained_on != splits.name:
        logger.warning(
            "the supernet was trained on %r but is verified on %r", trained_on, splits.name
        )
    limit_threads()
    return export_model(
        space,
        supernet,
        cfg,
        splits,
        out_dir,
        board=profile,
        checkpoint_path=checkpoint_path,
        qat=qat,
        sparse=sparse,
        seed=seed,
        progress=progress,
    )
