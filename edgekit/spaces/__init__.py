"""Registry of named search spaces (``list_spaces``, ``get_space``)."""

from __future__ import annotations

from edgekit.errors import ConfigError
from edgekit.spaces._base import ArchConfig, Counts, SearchSpace

_REGISTRY: dict[str, type[SearchSpace]] = {}


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator adding a space to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # Imported here so that the registry fills on first use and import cycles stay impossible.
    import edgekit.spaces.tiny_cnn
    import edgekit.spaces.tiny_resnet
    import edgekit.spaces.tiny_vit  # noqa: F401


def list_spaces() -> list[str]:
    """Names of every registered space, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_space(name: str, num_classes: int = 10, in_channels: int = 1) -> SearchSpace:
    """Instantiate a registered space for a dataset with ``num_classes`` and ``in_channels``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown space {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels)


def config_from_dict(data: dict) -> ArchConfig:
    """Rebuild any registered space's config from its JSON dict (uses its ``space`` key)."""
    if not isinstance(data, dict) or "space" not in data:
        raise ConfigError("config must be a JSON object with a 'space' key")
    space = get_space(
        data["space"],
        num_classes=int(data.get("num_classes", 10)),
        in_channels=int(data.get("in_channels", 1)),
    )
    return space.from_dict(data)


__all__ = [
    "ArchConfig",
    "Counts",
    "SearchSpace",
    "config_from_dict",
    "get_space",
    "list_spaces",
    "register_space",
]
