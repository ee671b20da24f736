"""`edgekit boards`: list the board profiles, or show one in full."""

from __future__ import annotations

import argparse
import json

from edgekit.cli._common import add_profiles_option, console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "boards",
        help="list board profiles or show one",
        description="List the board profiles (bundled, $EDGEKIT_PROFILE_PATH and --profiles "
        "folders), or show every field of one with 'edgekit boards show NAME'.",
    )
    add_profiles_option(parser)
    parser.set_defaults(func=_list)
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    show = actions.add_parser("show", help="show every field of one profile")
    show.add_argument("name", metavar="NAME", help="board name or path to a .toml profile")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_profiles_option(show)
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from edgekit.profiles import list_profiles
    from edgekit.units import format_size

    table = Table(
        title="Board profiles",
        caption="SRAM and flash: the budget left after the firmware's reservation",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("name", no_wrap=True)
    table.add_column("core", no_wrap=True)
    table.add_column("SRAM", justify="right", no_wrap=True)
    table.add_column("flash", justify="right", no_wrap=True)
    table.add_column("flashed via", no_wrap=True)
    for profile in list_profiles(args.profiles):
        table.add_row(
            profile.name,
            f"{profile.core} @ {profile.clock_hz / 1e6:g} MHz",
            format_size(profile.sram_budget_bytes),
            format_size(profile.flash_budget_bytes),
            profile.flash.method,
        )
    console.print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgekit.profiles import load_profile

    profile = load_profile(args.name, args.profiles)
    data = profile.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    table = Table(title=f"{profile.name}: {profile.description}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    console.print(table)
    return 0


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows
