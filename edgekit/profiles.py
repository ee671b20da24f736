"""Device profiles: one TOML file per board, validated against a typed schema on load.

A profile's name is its file name without ``.toml``. Profiles are looked up in, first to last:
folders passed as ``extra_dirs``, the folders in ``$EDGEKIT_PROFILE_PATH`` (``os.pathsep``
separated), then the bundled ``device_profiles/`` folder; the first file with a given name wins,
so a user folder can add boards and override bundled ones without editing the package.

The schema (``device_profiles/stm32f746g-disco.toml`` documents every key in comments):

- top level: ``description``, ``core``, ``clock_hz``, ``sram_bytes``, ``flash_bytes``,
  ``firmware_sram_bytes``, ``firmware_flash_bytes``, ``fpu``, ``dsp``, and optionally
  ``pointer_bytes`` (default 4) and ``alignment_bytes`` (default 16); sizes are ints or size
  strings parsed by :func:`edgekit.units.parse_size`;
- ``[serial]``: ``baud``, optional ``usb_vid_pid`` list;
- ``[flash]``: ``method`` plus the keys that method needs;
- ``[qemu]`` (emulated boards only): ``machine``, optional ``cpu`` and ``extra_args``;
- ``[latency]`` (optional): latency-model coefficients, names to numbers.

Every problem raises :class:`~edgekit.errors.ProfileError` with one line naming the file, the
key and what was expected; unknown keys are rejected so typos do not pass silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from edgekit.errors import EdgekitError, ProfileError
from edgekit.units import format_size, parse_size

logger = logging.getLogger(__name__)

def _bundled_profile_dir() -> Path:
    # A source checkout (editable install) keeps the profiles beside the package; a wheel
    # install puts them under <prefix>/share/edgekit (see pyproject's data-files).
    checkout = Path(__file__).resolve().parents[1] / "device_profiles"
    installed = Path(sys.prefix) / "share" / "edgekit" / "device_profiles"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


BUNDLED_PROFILE_DIR = _bundled_profile_dir()
PROFILE_PATH_ENV = "EDGEKIT_PROFILE_PATH"

FPU_KINDS = ("none", "sp", "dp")

# FPU options each core can be built with (per Arm's / the vendor's core TRMs) and whether it
# has packed-SIMD MAC instructions that optimized int8 kernels use (ARMv7E-M/v8-M DSP
# extension, Helium on v8.1-M, PIE on the ESP32-S3's LX7). "host" is the host-side twin.
_CORE_FPU_OPTIONS: dict[str, tuple[str, ...]] = {
    "cortex-m0": ("none",),
    "cortex-m0+": ("none",),
    "cortex-m3": ("none",),
    "cortex-m4": ("none", "sp"),
    "cortex-m7": ("none", "sp", "dp"),
    "cortex-m23": ("none",),
    "cortex-m33": ("none", "sp"),
    "cortex-m55": ("none", "sp", "dp"),
    "cortex-m85": ("none", "sp", "dp"),
    "xtensa-lx6": ("none", "sp"),
    "xtensa-lx7": ("none", "sp"),
    "riscv32": ("none", "sp", "dp"),
    "host": ("none", "sp", "dp"),
}
_CORES_WITHOUT_DSP = frozenset({"cortex-m0", "cortex-m0+", "cortex-m3", "cortex-m23"})
KNOWN_CORES: tuple[str, ...] = tuple(_CORE_FPU_OPTIONS)

FLASH_METHODS = ("openocd", "pyocd", "esptool", "uf2", "bossac", "qemu", "none")
# The key each flash method cannot work without ("qemu" needs the [qemu] table instead).
_FLASH_METHOD_KEY = {
    "openocd": "openocd_config",
    "pyocd": "pyocd_target",
    "esptool": "esptool_chip",
    "uf2": "uf2_volume",
}

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_VID_PID_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
_MISSING: Any = object()


class FrozenMapping(Mapping[str, float]):
    """A read-only, hashable and picklable ``str -> float`` mapping."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, float] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> float:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"


@dataclass(frozen=True)
class SerialSpec:
    """How the host talks to the board. ``usb_vid_pid`` lists ``"vvvv:pppp"`` (lower-case hex)
    identities that auto-detection may match; empty for boards without a USB serial port."""

    baud: int
    usb_vid_pid: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlashSpec:
    """How firmware gets onto the board. ``method`` is the preferred one; the other fields,
    when set, make further methods possible (see :attr:`available_methods`)."""

    method: str
    openocd_config: tuple[str, ...] = ()  # files passed as ``-f``, e.g. board/st_nucleo_l4.cfg
    pyocd_target: str | None = None
    esptool_chip: str | None = None
    uf2_family_id: int | None = None
    uf2_volume: str | None = None  # label of the bootloader's mass-storage drive
    reset_1200bps: bool = False  # a 1200-baud open/close on the serial port enters the loader

    @property
    def available_methods(self) -> tuple[str, ...]:
        """The preferred method first, then every other method this spec has the keys for."""
        others = [
            method
            for method, key in _FLASH_METHOD_KEY.items()
            if method != self.method and getattr(self, key)
        ]
        return (self.method, *others)


@dataclass(frozen=True)
class QemuSpec:
    """The QEMU machine that emulates the board (``qemu-system-arm -M machine -cpu cpu``)."""

    machine: str
    cpu: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceProfile:
    """One board. Sizes are bytes; ``firmware_*`` is what the firmware and runtime reserve."""

    name: str
    description: str
    core: str
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    firmware_sram_bytes: int
    firmware_flash_bytes: int
    fpu: str
    dsp: bool
    pointer_bytes: int
    alignment_bytes: int
    serial: SerialSpec
    flash: FlashSpec
    qemu: QemuSpec | None
    latency: Mapping[str, float] = field(default_factory=FrozenMapping)
    source: Path = field(default=Path(), compare=False)

    def __post_init__(self) -> None:
        # Keep the coefficients read-only (and the profile hashable) whatever the caller passed.
        if not isinstance(self.latency, FrozenMapping):
            object.__setattr__(self, "latency", FrozenMapping(self.latency))

    @property
    def sram_budget_bytes(self) -> int:
        """SRAM left for the model (tensor arena) after the firmware's reservation."""
        return self.sram_bytes - self.firmware_sram_bytes

    @property
    def flash_budget_bytes(self) -> int:
        """Flash left for the model (weights and graph) after the firmware's reservation."""
        return self.flash_bytes - self.firmware_flash_bytes

    @property
    def is_emulated(self) -> bool:
        """True for boards that run under QEMU (the profile has a ``[qemu]`` table)."""
        return self.qemu is not None

    def with_sram(self, sram_bytes: int | str) -> DeviceProfile:
        """A copy with a smaller SRAM size, for a configurable budget (e.g. running the QEMU
        board as a stand-in for a smaller part). It must stay above the firmware's reservation
        and cannot exceed this profile's SRAM."""
        try:
            new_sram = parse_size(sram_bytes)
        except EdgekitError as e:
            raise ProfileError(f"{self.name}: SRAM size: {e}") from e
        if not self.firmware_sram_bytes < new_sram <= self.sram_bytes:
            raise ProfileError(
                f"{self.name}: SRAM size must be more than the firmware's "
                f"{format_size(self.firmware_sram_bytes)} and at most the board's "
                f"{format_size(self.sram_bytes)}, got {format_size(new_sram)}"
            )
        return dataclasses.replace(self, sram_bytes=new_sram)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: the TOML schema's keys plus ``name``, ``source`` and the budgets."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            if f.name not in ("name", "serial", "flash", "qemu", "latency", "source"):
                out[f.name] = getattr(self, f.name)
        out["sram_budget_bytes"] = self.sram_budget_bytes
        out["flash_budget_bytes"] = self.flash_budget_bytes
        out["serial"] = {"baud": self.serial.baud, "usb_vid_pid": list(self.serial.usb_vid_pid)}
        out["flash"] = _nondefault_fields(self.flash)
        out["qemu"] = None if self.qemu is None else _nondefault_fields(self.qemu)
        out["latency"] = dict(self.latency)
        out["source"] = str(self.source)
        return out


def _nondefault_fields(spec: FlashSpec | QemuSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# --------------------------------------------------------------------------- lookup


def profile_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders searched for profiles, highest priority first: ``extra``, then
    ``$EDGEKIT_PROFILE_PATH``, then the bundled folder. A missing folder in ``extra`` is an
    error; missing folders in the environment variable are skipped with a warning."""
    dirs: list[Path] = []
    for entry in extra:
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise ProfileError(f"profile folder {str(folder)!r} does not exist")
        dirs.append(folder)
    for entry in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep):
        if not entry:
            continue
        folder = Path(entry).expanduser()
        if folder.is_dir():
            dirs.append(folder)
        else:
            logger.warning("%s names %r, which is not a folder; skipped", PROFILE_PATH_ENV, entry)
    dirs.append(BUNDLED_PROFILE_DIR)
    unique: list[Path] = []
    for folder in dirs:
        if folder.resolve() not in {seen.resolve() for seen in unique}:
            unique.append(folder)
    return unique


def _profile_files(extra_dirs: Sequence[str | Path]) -> dict[str, Path]:
    """Name -> file of every visible profile, the first folder's file winning."""
    files: dict[str, Path] = {}
    for folder in profile_dirs(extra_dirs):
        for path in sorted(folder.glob("*.toml")):
            if path.stem in files:
                logger.debug("profile %s from %s overrides %s", path.stem, files[path.stem], path)
                continue
            files[path.stem] = path
    return files


def list_profiles(extra_dirs: Sequence[str | Path] = ()) -> list[DeviceProfile]:
    """Every visible profile, sorted by name; a malformed file raises ProfileError."""
    files = _profile_files(extra_dirs)
    return [_load_file(files[name]) for name in sorted(files)]


def load_profile(name_or_path: str | Path, extra_dirs: Sequence[str | Path] = ()) -> DeviceProfile:
    """A profile by board name (searched in :func:`profile_dirs`) or by path to a ``.toml``."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file {text!r} does not exist")
        return _load_file(path)
    files = _profile_files(extra_dirs)
    if text not in files:
        raise ProfileError(f"unknown board {text!r}, available: {', '.join(sorted(files))}")
    return _load_file(files[text])


def _load_file(path: Path) -> DeviceProfile:
    where = _display(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{where}: invalid TOML: not UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise ProfileError(f"{where}: cannot read: {e.strerror or e}") from e
    return parse_profile(data, path)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- validation


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Table:
    """One TOML table under validation; ``prefix`` makes nested keys read ``serial.baud``."""

    data: Mapping[str, Any]
    where: str
    prefix: str = ""

    def fail(self, key: str, message: str) -> NoReturn:
        raise ProfileError(f"{self.where}: key '{self.prefix}{key}': {message}")

    def expected(self, key: str, what: str, got: Any) -> NoReturn:
        self.fail(key, f"expected {what}, got {_short_repr(got)}")

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    hint = f"did you mean '{self.prefix}{close[0]}'?"
                else:
                    hint = f"expected one of [{', '.join(allowed)}]"
                raise ProfileError(f"{self.where}: unknown key '{self.prefix}{key}', {hint}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ProfileError(f"{self.where}: missing key '{self.prefix}{key}'")
        return default

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if key in self.data and (not isinstance(value, str) or not value.strip()):
            self.expected(key, "a non-empty string", value)
        return value

    def choice(self, key: str, options: Sequence[str], what: str) -> str:
        value = self.string(key)
        if value not in options:
            self.fail(key, f"unknown {what} {value!r}, expected one of [{', '.join(options)}]")
        return value

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        if key in self.data and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            self.expected(key, "a positive integer", value)
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.expected(key, "true or false", value)
        return value

    def size(self, key: str, allow_zero: bool = False) -> int:
        value = self.get(key)
        what = (
            f"a {'non-negative' if allow_zero else 'positive'} size in bytes "
            "(an integer or a string like '320KiB')"
        )
        try:
            n_bytes = parse_size(value)
        except EdgekitError as e:
            message = f"expected {what}, got {_short_repr(value)}"
            raise ProfileError(f"{self.where}: key '{self.prefix}{key}': {message}") from e
        if n_bytes == 0 and not allow_zero:
            self.expected(key, what, value)
        return n_bytes

    def strings(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings (absent: empty)."""
        value = self.get(key, [])
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(
            isinstance(v, str) and v.strip() for v in values
        ):
            self.expected(key, "a string or a list of non-empty strings", value)
        return tuple(values)

    def table(self, key: str, required: bool = True) -> _Table | None:
        value = self.get(key, _MISSING if required else None)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.expected(key, "a table", value)
        return _Table(value, self.where, f"{self.prefix}{key}.")


_TOP_KEYS = (
    "description",
    "core",
    "clock_hz",
    "sram_bytes",
    "flash_bytes",
    "firmware_sram_bytes",
    "firmware_flash_bytes",
    "fpu",
    "dsp",
    "pointer_bytes",
    "alignment_bytes",
    "serial",
    "flash",
    "qemu",
    "latency",
)
_SERIAL_KEYS = ("baud", "usb_vid_pid")
_FLASH_KEYS = tuple(f.name for f in dataclasses.fields(FlashSpec))
_QEMU_KEYS = tuple(f.name for f in dataclasses.fields(QemuSpec))


def parse_profile(data: Mapping[str, Any], source: Path) -> DeviceProfile:
    """Validate parsed TOML ``data`` read from ``source`` (whose stem is the board name)."""
    source = Path(source)
    top = _Table(data, _display(source))
    name = source.stem
    if not _NAME_RE.fullmatch(name):
        raise ProfileError(
            f"{top.where}: board name {name!r} (the file name) must be lower-case letters, "
            "digits, '.', '_' or '-'"
        )
    top.check_keys(_TOP_KEYS)

    core = top.choice("core", KNOWN_CORES, "core")
    fpu = top.choice("fpu", FPU_KINDS, "fpu")
    if fpu not in _CORE_FPU_OPTIONS[core]:
        options = ", ".join(_CORE_FPU_OPTIONS[core])
        top.fail("fpu", f"{core} has no {fpu!r} FPU, expected one of [{options}]")
    dsp = top.boolean("dsp")
    if dsp and core in _CORES_WITHOUT_DSP:
        top.fail("dsp", f"{core} has no DSP/SIMD extension, expected false")

    sizes = {
        "sram": top.size("sram_bytes"),
        "flash": top.size("flash_bytes"),
    }
    reserved = {
        "sram": top.size("firmware_sram_bytes", allow_zero=True),
        "flash": top.size("firmware_flash_bytes", allow_zero=True),
    }
    for memory in ("sram", "flash"):
        if reserved[memory] >= sizes[memory]:
            top.fail(
                f"firmware_{memory}_bytes",
                f"expected less than {memory}_bytes ({format_size(sizes[memory])}), "
                f"got {reserved[memory]} ({format_size(reserved[memory])})",
            )

    pointer_bytes = top.integer("pointer_bytes", default=4)
    if pointer_bytes not in (4, 8):
        top.expected("pointer_bytes", "4 or 8", pointer_bytes)
    alignment_bytes = top.integer("alignment_bytes", default=16)
    if alignment_bytes & (alignment_bytes - 1):
        top.expected("alignment_bytes", "a power of two", alignment_bytes)

    qemu = _parse_qemu(top.table("qemu", required=False))
    return DeviceProfile(
        name=name,
        description=top.string("description"),
        core=core,
        clock_hz=top.integer("clock_hz"),
        sram_bytes=sizes["sram"],
        flash_bytes=sizes["flash"],
        firmware_sram_bytes=reserved["sram"],
        firmware_flash_bytes=reserved["flash"],
        fpu=fpu,
        dsp=dsp,
        pointer_bytes=pointer_bytes,
        alignment_bytes=alignment_bytes,
        serial=_parse_serial(top.table("serial")),
        flash=_parse_flash(top.table("flash"), has_qemu=qemu is not None),
        qemu=qemu,
        latency=_parse_latency(top.table("latency", required=False)),
        source=source,
    )


def _parse_serial(table: _Table) -> SerialSpec:
    table.check_keys(_SERIAL_KEYS)
    ids = table.get("usb_vid_pid", [])
    if not isinstance(ids, list) or not all(
        isinstance(i, str) and _VID_PID_RE.fullmatch(i.lower()) for i in ids
    ):
        table.expected("usb_vid_pid", "a list of 'vvvv:pppp' hex strings", ids)
    return SerialSpec(baud=table.integer("baud"), usb_vid_pid=tuple(i.lower() for i in ids))


def _parse_flash(table: _Table, has_qemu: bool) -> FlashSpec:
    table.check_keys(_FLASH_KEYS)
    method = table.choice("method", FLASH_METHODS, "flash method")
    uf2_family_id = table.get("uf2_family_id", None)
    if uf2_family_id is not None and (
        isinstance(uf2_family_id, bool)
        or not isinstance(uf2_family_id, int)
        or not 0 <= uf2_family_id < 2**32
    ):
        table.expected(
            "uf2_family_id", "a 32-bit unsigned integer such as 0xe48bff56", uf2_family_id
        )
    spec = FlashSpec(
        method=method,
        openocd_config=table.strings("openocd_config"),
        pyocd_target=table.string("pyocd_target", default=None),
        esptool_chip=table.string("esptool_chip", default=None),
        uf2_family_id=uf2_family_id,
        uf2_volume=table.string("uf2_volume", default=None),
        reset_1200bps=table.boolean("reset_1200bps", default=False),
    )
    needed_key = _FLASH_METHOD_KEY.get(method)
    if needed_key and not getattr(spec, needed_key):
        raise ProfileError(
            f"{table.where}: missing key '{table.prefix}{needed_key}' "
            f"(flash method {method!r} needs it)"
        )
    if method == "qemu" and not has_qemu:
        raise ProfileError(f"{table.where}: missing key 'qemu' (flash method 'qemu' needs it)")
    return spec


def _parse_qemu(table: _Table | None) -> QemuSpec | None:
    if table is None:
        return None
    table.check_keys(_QEMU_KEYS)
    return QemuSpec(
        machine=table.string("machine"),
        cpu=table.string("cpu", default=None),
        extra_args=table.strings("extra_args"),
    )


def _parse_latency(table: _Table | None) -> FrozenMapping:
    if table is None:
        return FrozenMapping()
    coefficients: dict[str, float] = {}
    for key, value in table.data.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            table.expected(key, "a finite number", value)
        coefficients[key] = float(value)
    return FrozenMapping(coefficients)
