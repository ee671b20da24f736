from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError
from edgekit.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (327680, 327680),
        ("327680", 327680),
        ("327_680", 327680),
        ("  4096  ", 4096),
        ("512B", 512),
        ("512 b", 512),
        ("320KiB", 327680),
        ("320 KiB", 327680),
        ("320kib", 327680),
        ("256K", 262144),
        ("256k", 262144),
        ("320KB", 320000),
        ("320kB", 320000),
        ("1MiB", 1048576),
        ("1M", 1048576),
        ("2MB", 2000000),
        ("1.5MiB", 1572864),
        ("0.5KiB", 512),
        ("1GiB", 1073741824),
        ("1G", 1073741824),
        ("1GB", 1000000000),
        ("320.0 KiB", 327680),
        ("1TiB", 1024**4),
        ("1TB", 1000**4),
    ],
)
def test_parse_size_accepts(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "abc",
        "KiB",
        "-5",
        -5,
        "320 parsecs",
        "320KiBs",
        "1.5B",
        "0.1KiB",
        "1e3",
        "0x100",
        "1,024",
        "3 2 0KiB",
        "1PiB",
        1.5,
        None,
        True,
        [320],
    ],
)
def test_parse_size_rejects_with_a_helpful_message(bad: object) -> None:
    with pytest.raises(EdgekitError) as excinfo:
        parse_size(bad)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert repr(bad) in message
    assert "\n" not in message


def test_parse_size_message_lists_the_accepted_forms() -> None:
    with pytest.raises(EdgekitError, match="KiB") as excinfo:
        parse_size("320 parsecs")
    assert "KB = 1000" in str(excinfo.value)


@pytest.mark.parametrize(
    ("n_bytes", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (327680, "320.0 KiB"),
        (1048575, "1.0 MiB"),
        (1048576, "1.0 MiB"),
        (2 * 1024**2, "2.0 MiB"),
        (1024**3, "1.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),
        (-2048, "-2.0 KiB"),
        (-5, "-5 B"),
    ],
)
def test_format_size(n_bytes: int, expected: str) -> None:
    assert format_size(n_bytes) == expected


@pytest.mark.parametrize("n_bytes", [0, 512, 1024, 327680, 1572864, 2 * 1024**3, 3 * 1024**4])
def test_format_then_parse_round_trips_on_tenths_of_a_unit(n_bytes: int) -> None:
    assert parse_size(format_size(n_bytes)) == n_bytes
