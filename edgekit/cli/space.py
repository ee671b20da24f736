"""``edgekit space``: list the search spaces, sample architectures, decode a genome."""

from __future__ import annotations

import argparse
import json
import math
import random
from typing import Any

from edgekit.cli._common import console

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "space",
        help="list search spaces, sample architectures, decode a genome",
        description="Inspect the registered search spaces and their architectures.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    actions = parser.add_subparsers(title="actions", metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="every space: knobs, number of architectures, smallest and largest size",
        description="Every registered space with its knobs, the number of distinct "
        "architectures, and the params / MACs of its smallest and largest subnet.",
    )
    _add_dataset_shape(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)

    sample = actions.add_parser(
        "sample",
        help="random architectures of a space with their params and MACs",
        description="Print random architectures of a space: genome, parameters and MACs.",
    )
    sample.add_argument("name", metavar="NAME", help="space name (see 'edgekit space list')")
    sample.add_argument(
        "-n", "--count", type=int, default=5, help="how many architectures (default: 5)"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_dataset_shape(sample)
    sample.add_argument("--json", action="store_true", help="one JSON object per line")
    sample.set_defaults(func=_sample)

    show = actions.add_parser(
        "show",
        help="decode a genome: the full config, params and MACs",
        description="Decode a genome string into its config and print params and MACs.",
    )
    show.add_argument("name", metavar="NAME", help="space name")
    show.add_argument("genome", metavar="GENOME", help="genome string, e.g. from 'space sample'")
    _add_dataset_shape(show)
    show.add_argument("--json", action="store_true", help="print the config as JSON")
    show.set_defaults(func=_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _add_dataset_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-classes", type=int, default=10, metavar="K", help="classifier outputs (default: 10)"
    )
    parser.add_argument(
        "--in-channels",
        type=int,
        default=1,
        choices=(1, 3),
        help="input channels: 1 grey, 3 RGB (default: 1)",
    )


def _space(args: argparse.Namespace, name: str) -> Any:
    from edgekit.spaces import get_space

    return get_space(name, num_classes=args.num_classes, in_channels=args.in_channels)


def space_size(space: Any) -> tuple[int, bool]:
    """(number of distinct architectures, exact?). Spaces that do not count themselves
    (``num_configs()``) get the product of their gene bounds, an upper bound."""
    count = getattr(space, "num_configs", None)
    if callable(count):
        return int(count()), True
    return math.prod(space.vector_bounds()), False


def human(value: float) -> str:
    """3 significant digits with a k / M / G suffix: 2554 -> '2.55 k'."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g} {suffix}"
    return f"{value:g}"


def _size_text(size: int, exact: bool) -> str:
    text = f"{size:,}" if size < 10**7 else f"{size:.3g}".replace("e+", "e")
    return text if exact else f"≤ {text}"


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgekit.spaces import list_spaces

    rows = []
    for name in list_spaces():
        space = _space(args, name)
        size, exact = space_size(space)
        small, large = space.count(space.smallest()), space.count(space.largest())
        rows.append(
            {
                "name": name,
                "knobs": list(space.choices()),
                "num_configs": size,
                "num_configs_exact": exact,
                "smallest": {"genome": space.encode(space.smallest()), **_counts(small)},
                "largest": {"genome": space.encode(space.largest()), **_counts(large)},
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = Table(title="Search spaces", title_justify="left")
    for column in ("space", "knobs", "architectures", "smallest params / MACs",
                   "largest params / MACs"):  # fmt: skip
        table.add_column(column, justify="right" if "params" in column else "left")
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["knobs"]),
            _size_text(row["num_configs"], row["num_configs_exact"]),
            f"{human(row['smallest']['params'])} / {human(row['smallest']['macs'])}",
            f"{human(row['largest']['params'])} / {human(row['largest']['macs'])}",
        )
    console.print(table)
    return 0


def _counts(counts: Any) -> dict[str, int]:
    return {"params": counts.params, "macs": counts.macs}


def _record(space: Any, cfg: Any) -> dict[str, Any]:
    return {
        "space": space.name,
        "genome": space.encode(cfg),
        **_counts(space.count(cfg)),
        "input_shape": list(space.input_shape(cfg)),
        "config": cfg.to_dict(),
    }


def _sample(args: argparse.Namespace) -> int:
    from edgekit.errors import ConfigError

    if args.count < 1:
        raise ConfigError(f"-n {args.count}: expected at least 1")
    space = _space(args, args.name)
    rng = random.Random(args.seed)
    records = [_record(space, space.sample(rng)) for _ in range(args.count)]
    width = max(len(r["genome"]) for r in records)
    for record in records:
        if args.json:
            print(json.dumps(record))
        else:
            print(
                f"{record['genome']:<{width}}  {record['params']:>9,} params  "
                f"{record['macs']:>12,} MACs"
            )
    return 0


def _show(args: argparse.Namespace) -> int:
    from rich.table import Table

    space = _space(args, args.name)
    cfg = space.decode(args.genome)
    record = _record(space, cfg)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    table = Table(title=f"{space.name}  {record['genome']}", title_justify="left")
    table.add_column("field")
    table.add_column("value")
    for key, value in record["config"].items():
        table.add_row(key, str(value))
    table.add_row("input shape (H, W, C)", str(tuple(record["input_shape"])))
    table.add_row("parameters", f"{record['params']:,}")
    table.add_row("MACs", f"{record['macs']:,}")
    console.print(table)
    return 0
