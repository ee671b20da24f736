from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import pickle
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgekit.errors import ProfileError
from edgekit.profiles import (
    BUNDLED_PROFILE_DIR,
    KNOWN_CORES,
    PROFILE_PATH_ENV,
    DeviceProfile,
    list_profiles,
    load_profile,
    parse_profile,
    profile_dirs,
)

BUNDLED_FILES = sorted(BUNDLED_PROFILE_DIR.glob("*.toml"))
REQUIRED_BOARDS = {
    "stm32f746g-disco",
    "nucleo-h743zi",
    "nucleo-l4r5zi",
    "arduino-nano-33-ble",
    "rpi-pico",
    "esp32-s3-devkitc",
    "qemu-mps2-an500",
    "virtual",
}

VALID: dict[str, Any] = {
    "description": "test board",
    "core": "cortex-m4",
    "clock_hz": 80_000_000,
    "sram_bytes": "128KiB",
    "flash_bytes": 524288,
    "firmware_sram_bytes": "16KiB",
    "firmware_flash_bytes": "64KiB",
    "fpu": "sp",
    "dsp": True,
    "serial": {"baud": 115200, "usb_vid_pid": ["0483:374B"]},
    "flash": {"method": "openocd", "openocd_config": "board/test.cfg"},
    "latency": {"macs_per_cycle": 2},
}


@pytest.fixture(autouse=True)
def _no_profile_path_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_PATH_ENV, raising=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _to_toml(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for profiles: scalars, lists and one level of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _write(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(_to_toml(data))
    return path


# --------------------------------------------------------------------------- bundled profiles


def test_at_least_eight_bundled_profiles_including_the_required_boards() -> None:
    names = {p.name for p in list_profiles()}
    assert len(names) >= 8
    assert names >= REQUIRED_BOARDS


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=[p.stem for p in BUNDLED_FILES])
def test_every_bundled_profile_loads(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.source == path
    assert profile.core in KNOWN_CORES
    assert profile.sram_budget_bytes > 0
    assert profile.flash_budget_bytes > 0
    assert profile.alignment_bytes == 16
    assert load_profile(path.stem) == profile
    json.dumps(profile.to_dict())


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=[p.stem for p in BUNDLED_FILES])
def test_to_dict_round_trips_through_the_validator(path: Path) -> None:
    profile = load_profile(path)
    data = profile.to_dict()
    for derived in ("name", "source", "sram_budget_bytes", "flash_budget_bytes"):
        del data[derived]
    if data["qemu"] is None:
        del data["qemu"]
    assert parse_profile(data, profile.source) == profile


def test_list_profiles_is_sorted_by_name() -> None:
    names = [p.name for p in list_profiles()]
    assert names == sorted(names)


def test_bundled_values_from_the_datasheets() -> None:
    disco = load_profile("stm32f746g-disco")
    assert (disco.sram_bytes, disco.flash_bytes) == (320 * 1024, 1024 * 1024)
    assert (disco.core, disco.fpu, disco.clock_hz) == ("cortex-m7", "sp", 216_000_000)
    assert disco.serial.usb_vid_pid == ("0483:374b",)
    pico = load_profile("rpi-pico")
    assert (pico.core, pico.fpu, pico.dsp) == ("cortex-m0+", "none", False)
    assert pico.flash.method == "uf2"
    assert load_profile("virtual").pointer_bytes == 8
    qemu = load_profile("qemu-mps2-an500")
    assert qemu.qemu is not None and qemu.qemu.machine == "mps2-an500"
    assert qemu.is_emulated and not disco.is_emulated


# --------------------------------------------------------------------------- budgets, copies


def test_budgets_subtract_the_firmware_reservation(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "board", VALID))
    assert profile.sram_bytes == 128 * 1024
    assert profile.sram_budget_bytes == (128 - 16) * 1024
    assert profile.flash_budget_bytes == 524288 - 64 * 1024


@pytest.mark.parametrize("new_sram", [256 * 1024, "256KiB", "4MiB"])
def test_with_sram_returns_a_copy_with_a_new_budget(new_sram: int | str) -> None:
    qemu = load_profile("qemu-mps2-an500")
    smaller = qemu.with_sram(new_sram)
    expected = 256 * 1024 if new_sram != "4MiB" else 4 * 1024**2
    assert smaller.sram_bytes == expected
    assert smaller.sram_budget_bytes == expected - qemu.firmware_sram_bytes
    assert smaller.name == qemu.name and smaller.source == qemu.source
    assert qemu.sram_bytes == 4 * 1024**2


@pytest.mark.parametrize("new_sram", ["8MiB", "32KiB", "16KiB", 0, -1, "lots"])
def test_with_sram_rejects_sizes_outside_the_board(new_sram: int | str) -> None:
    with pytest.raises(ProfileError, match="qemu-mps2-an500") as excinfo:
        load_profile("qemu-mps2-an500").with_sram(new_sram)
    assert "\n" not in str(excinfo.value)


def test_profiles_are_frozen_hashable_and_picklable() -> None:
    profile = load_profile("stm32f746g-disco")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.sram_bytes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.latency["macs_per_cycle"] = 1.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(profile)) == profile
    assert hash(profile) == hash(load_profile("stm32f746g-disco"))
    assert len({profile, load_profile("stm32f746g-disco")}) == 1


def test_directly_built_profile_keeps_latency_read_only() -> None:
    profile = dataclasses.replace(load_profile("virtual"), latency={"macs_per_cycle": 1.0})
    with pytest.raises(TypeError):
        profile.latency["macs_per_cycle"] = 2.0  # type: ignore[index]
    hash(profile)


def test_latency_table_and_lower_cased_ids(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "board", VALID))
    assert dict(profile.latency) == {"macs_per_cycle": 2.0}
    assert isinstance(profile.latency["macs_per_cycle"], float)
    assert profile.serial.usb_vid_pid == ("0483:374b",)
    assert profile.pointer_bytes == 4 and profile.alignment_bytes == 16  # defaults


# --------------------------------------------------------------------------- malformed files


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, key = dotted.split(".")
    for table in tables:
        data = data[table]
    data[key] = value


def _delete(data: dict[str, Any], dotted: str) -> None:
    *tables, key = dotted.split(".")
    for table in tables:
        data = data[table]
    del data[key]


_DELETE = object()

MALFORMED = [
    # (key to change, new value or _DELETE, text the one-line message must contain)
    ("core", _DELETE, "missing key 'core'"),
    ("sram_bytes", _DELETE, "missing key 'sram_bytes'"),
    ("serial", _DELETE, "missing key 'serial'"),
    ("serial.baud", _DELETE, "missing key 'serial.baud'"),
    ("flash.method", _DELETE, "missing key 'flash.method'"),
    ("clock_hz", "fast", "key 'clock_hz': expected a positive integer, got 'fast'"),
    ("clock_hz", 0, "key 'clock_hz': expected a positive integer, got 0"),
    ("clock_hz", 1.5, "key 'clock_hz': expected a positive integer"),
    ("dsp", "yes", "key 'dsp': expected true or false"),
    ("description", "", "key 'description': expected a non-empty string"),
    ("sram_bytes", True, "key 'sram_bytes': expected a positive size"),
    ("sram_bytes", -5, "key 'sram_bytes': expected a positive size in bytes"),
    ("sram_bytes", "-5KiB", "key 'sram_bytes'"),
    ("flash_bytes", 0, "key 'flash_bytes': expected a positive size"),
    ("firmware_sram_bytes", -1, "key 'firmware_sram_bytes': expected a non-negative size"),
    ("sram_bytes", "320 parsecs", "got '320 parsecs'"),
    ("firmware_sram_bytes", "1MiB", "key 'firmware_sram_bytes': expected less than sram_bytes"),
    ("firmware_flash_bytes", 524288, "key 'firmware_flash_bytes': expected less than"),
    ("core", "cortex-m99", "key 'core': unknown core 'cortex-m99', expected one of ["),
    ("fpu", "quad", "key 'fpu': unknown fpu 'quad'"),
    ("fpu", "dp", "key 'fpu': cortex-m4 has no 'dp' FPU"),
    ("pointer_bytes", 2, "key 'pointer_bytes': expected 4 or 8"),
    ("alignment_bytes", 12, "key 'alignment_bytes': expected a power of two"),
    ("sram_byte", 1, "unknown key 'sram_byte', did you mean 'sram_bytes'?"),
    ("zzz", 1, "unknown key 'zzz', expected one of ["),
    ("serial.bauds", 9600, "unknown key 'serial.bauds'"),
    ("serial", 5, "key 'serial': expected a table, got 5"),
    ("serial.usb_vid_pid", ["0483-374b"], "key 'serial.usb_vid_pid': expected a list"),
    ("serial.usb_vid_pid", "0483:374b", "key 'serial.usb_vid_pid'"),
    ("flash.method", "jtag", "key 'flash.method': unknown flash method 'jtag'"),
    ("flash.openocd_config", _DELETE, "missing key 'flash.openocd_config'"),
    ("flash.openocd_config", [1], "key 'flash.openocd_config': expected a string or a list"),
    ("flash.method", "qemu", "missing key 'qemu'"),
    ("flash.uf2_family_id", 2**40, "key 'flash.uf2_family_id'"),
    ("flash.reset_1200bps", 1, "key 'flash.reset_1200bps': expected true or false"),
    ("qemu", {"cpu": "cortex-m7"}, "missing key 'qemu.machine'"),
    ("latency.macs_per_cycle", "two", "key 'latency.macs_per_cycle': expected a finite number"),
    ("latency.macs_per_cycle", float("inf"), "key 'latency.macs_per_cycle'"),
    ("latency", [1, 2], "key 'latency': expected a table"),
]


@pytest.mark.parametrize(("key", "value", "expected"), MALFORMED)
def test_malformed_profile_gives_one_line_naming_file_and_key(
    tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    data = copy.deepcopy(VALID)
    if value is _DELETE:
        _delete(data, key)
    else:
        _set(data, key, value)
    path = tmp_path / "bad-board.toml"
    path.write_text(_to_toml(data))
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.split(": ")[0].endswith("bad-board.toml")
    assert expected in message


def test_dsp_and_fpu_must_exist_on_the_core(tmp_path: Path) -> None:
    data = {**VALID, "core": "cortex-m0+", "fpu": "none"}
    with pytest.raises(ProfileError, match="key 'dsp': cortex-m0\\+ has no DSP"):
        load_profile(_write(tmp_path, "m0", data))
    data = {**VALID, "core": "cortex-m0+", "dsp": False}
    with pytest.raises(ProfileError, match="key 'fpu': cortex-m0\\+ has no 'sp' FPU"):
        load_profile(_write(tmp_path, "m0", data))


@pytest.mark.parametrize(
    "text",
    ["core = \n", "[serial\nbaud = 1\n", 'core = "a"\ncore = "b"\n', "sram_bytes = 320KiB\n"],
)
def test_toml_syntax_error_gives_one_line_naming_file_and_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.split(": ")[0].endswith("broken.toml")
    assert ": invalid TOML: " in message
    assert "line" in message
    assert isinstance(excinfo.value.__cause__, tomllib.TOMLDecodeError)


def test_non_utf8_file_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "café"\n'.encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin1\.toml: invalid TOML"):
        load_profile(path)


def test_file_name_must_be_a_usable_board_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="board name 'My Board'"):
        load_profile(_write(tmp_path, "My Board", VALID))


def test_one_malformed_file_makes_list_profiles_fail(tmp_path: Path) -> None:
    _write(tmp_path, "good", VALID)
    _write(tmp_path, "bad", {**VALID, "core": "cortex-m99"})
    with pytest.raises(ProfileError, match=r"bad\.toml: key 'core'"):
        list_profiles(extra_dirs=[tmp_path])


# --------------------------------------------------------------------------- user folders


def test_user_folder_adds_a_profile(tmp_path: Path) -> None:
    _write(tmp_path, "my-board", VALID)
    names = [p.name for p in list_profiles(extra_dirs=[tmp_path])]
    assert "my-board" in names
    assert len(names) == len(BUNDLED_FILES) + 1
    assert load_profile("my-board", extra_dirs=[str(tmp_path)]).description == "test board"
    with pytest.raises(ProfileError, match="unknown board 'my-board'"):
        load_profile("my-board")


def test_user_folder_overrides_a_bundled_profile(tmp_path: Path) -> None:
    override = _write(tmp_path, "rpi-pico", VALID)
    profile = load_profile("rpi-pico", extra_dirs=[tmp_path])
    assert profile.description == "test board" and profile.source == override
    listed = {p.name: p for p in list_profiles(extra_dirs=[tmp_path])}
    assert len(listed) == len(BUNDLED_FILES)
    assert listed["rpi-pico"].source == override
    assert load_profile("rpi-pico").source == BUNDLED_PROFILE_DIR / "rpi-pico.toml"


def test_environment_variable_adds_and_overrides_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "my-board", VALID)
    _write(tmp_path, "virtual", {**VALID, "description": "env twin"})
    missing = tmp_path / "does-not-exist"
    monkeypatch.setenv(PROFILE_PATH_ENV, os.pathsep.join([str(missing), "", str(tmp_path)]))
    with caplog.at_level(logging.WARNING, logger="edgekit.profiles"):
        names = {p.name for p in list_profiles()}
    assert "my-board" in names
    assert load_profile("virtual").description == "env twin"
    assert "does-not-exist" in caplog.text


def test_extra_dirs_come_before_the_environment_and_the_bundled_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra, env = tmp_path / "extra", tmp_path / "env"
    extra.mkdir()
    env.mkdir()
    _write(extra, "virtual", {**VALID, "description": "from extra"})
    _write(env, "virtual", {**VALID, "description": "from env"})
    monkeypatch.setenv(PROFILE_PATH_ENV, str(env))
    assert profile_dirs([extra]) == [extra, env, BUNDLED_PROFILE_DIR]
    assert load_profile("virtual", extra_dirs=[extra]).description == "from extra"
    assert load_profile("virtual").description == "from env"


def test_missing_extra_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        profile_dirs([tmp_path / "nope"])


def test_unknown_board_lists_the_available_ones() -> None:
    with pytest.raises(ProfileError) as excinfo:
        load_profile("stm32f999")
    message = str(excinfo.value)
    assert "unknown board 'stm32f999'" in message
    assert all(name in message for name in REQUIRED_BOARDS)


def test_load_by_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "board", VALID)
    assert load_profile(str(path)) == load_profile(path)
    assert isinstance(load_profile(path), DeviceProfile)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
