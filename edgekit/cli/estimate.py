"""`edgekit estimate`: tensor arena and flash of a .tflite file or an architecture, vs a board."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgekit.cli._common import add_profiles_option, console
from edgekit.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="tensor arena and flash of a .tflite file or a config, and whether it fits a board",
        description="Compute the TFLite Micro tensor arena (planned activations 'head' + "
        "persistent 'tail') and the flash of an int8 .tflite file (any model), or of the model "
        "'edgekit export' would make from an architecture (genome string, config JSON or a "
        "JSON file; no conversion needed). With --board, compare them with what the board "
        "leaves after its firmware. Exit status 1 when the model does not fit.",
        epilog="examples: edgekit estimate model.tflite --board nucleo-f746zg --ops\n"
        "          edgekit estimate r32-w0.5-rk1-p1-k33.55.53.37-e62.43.62.23 --space tiny-cnn "
        "--board nucleo-l4r5zi",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.tflite|CONFIG", help="a .tflite file or a config")
    parser.add_argument("--board", metavar="NAME", help="board profile to check against")
    parser.add_argument("--sram", metavar="SIZE", help="tensor-arena budget instead, e.g. 256KiB")
    parser.add_argument("--flash", metavar="SIZE", help="model flash budget instead, e.g. 1MiB")
    parser.add_argument(
        "--space", help="space of a genome string (default: the one space that decodes it)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=10, metavar="K", help="for a config (default: 10)"
    )
    parser.add_argument(
        "--in-channels", type=int, default=1, choices=(1, 3), help="for a config (default: 1)"
    )
    parser.add_argument(
        "--pointer-bytes",
        type=int,
        choices=(4, 8),
        help="TFLM build: 4 = 32-bit firmware, 8 = the x86-64 Python package (default: the "
        "board's, else 4)",
    )
    parser.add_argument("--ops", action="store_true", help="per-operator table (.tflite only)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_profiles_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edgekit.estimate import FitReport
    from edgekit.profiles import load_profile
    from edgekit.units import parse_size

    board = load_profile(args.board, args.profiles) if args.board else None
    pointer = args.pointer_bytes or (board.pointer_bytes if board else 4)
    alignment = board.alignment_bytes if board else 16
    path = Path(args.model).expanduser()
    if path.suffix.lower() == ".tflite" or (path.is_file() and path.suffix.lower() != ".json"):
        figures, ops = _from_file(path, pointer, alignment, args.ops)
    else:
        figures, ops = _from_config(args, pointer, alignment), None
    verdict = None
    if board is None and bool(args.sram) != bool(args.flash):
        raise ConfigError("without --board, give both --sram and --flash (or neither)")
    if board is not None or args.sram:
        sram_budget = parse_size(args.sram) if args.sram else board.sram_budget_bytes
        flash_budget = parse_size(args.flash) if args.flash else board.flash_budget_bytes
        verdict = FitReport(
            board=board.name if board else "budget",
            arena_bytes=figures["arena_bytes"],
            flash_bytes=figures["flash_bytes"],
            sram_budget_bytes=sram_budget,
            flash_budget_bytes=flash_budget,
        )
    if args.json:
        out = {**figures, "ops": ops}
        if verdict is not None:
            out["fit"] = {"fits": verdict.fits, "rows": verdict.rows()}
        print(json.dumps(out, indent=2))
    else:
        _print(figures, ops, verdict)
    return 0 if verdict is None or verdict.fits else 1


def _from_file(
    path: Path, pointer: int, alignment: int, per_op: bool
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    from edgekit.estimate import analyze_tflite
    from edgekit.estimate.tflite_file import read_model_bytes

    model = read_model_bytes(path)
    report = analyze_tflite(model, pointer_bytes=pointer, alignment=alignment)
    layers = _bundle_layers(path, model)
    if layers is not None and len(layers) != len(report.per_op):
        layers = None

    def named(tensor: Any) -> str:  # an exported model's tensors are named by their writer
        if layers is None or tensor.tensor_index is None:
            return tensor.name
        writer = layers[tensor.first_used - 1] if tensor.first_used else "input"
        return f"{tensor.name} [{writer}]" if writer else tensor.name

    figures = {
        "source": str(path),
        "build": report.runtime.name,
        "arena_bytes": report.arena_bytes,
        "head_bytes": report.head_bytes,
        "tail_bytes": report.tail_bytes,
        "flash_bytes": report.flash_bytes,
        "limited_by": report.limited_by,
        "peak_op": None if report.peak_op is None else f"{report.peak_op[0]} {report.peak_op[1]}",
        "peak_tensors": [f"{named(t)} ({t.bytes} B)" for t in report.peak_tensors],
        "tail_breakdown": dict(report.tail_breakdown),
    }
    if not per_op:
        return figures, None
    rows = report.rows()
    if layers is not None:
        for row, layer in zip(rows, layers, strict=True):
            row["layer"] = layer
    return figures, rows


def _bundle_layers(path: Path, model: bytes) -> list[str | None] | None:
    """The layer of each op, from the manifest of the bundle ``path`` was exported into (an
    exported model has no tensor names), if that manifest describes ``model``, this file."""
    import hashlib

    manifest = path.with_name("manifest.json")
    try:
        described = json.loads(manifest.read_text())
        if described["model"]["sha256"] != hashlib.sha256(model).hexdigest():
            return None
        return described["op_layers"]
    except (OSError, ValueError, KeyError, TypeError):  # not a bundle (or an older one)
        return None


def _from_config(args: argparse.Namespace, pointer: int, alignment: int) -> dict[str, Any]:
    from edgekit.estimate import estimate_config

    space, cfg = _parse_config(args)
    estimate = estimate_config(cfg, pointer_bytes=pointer, alignment=alignment)
    return {
        "source": f"{space.name} {space.encode(cfg)}",
        "build": estimate.runtime.name,
        "arena_bytes": estimate.arena_bytes,
        "head_bytes": estimate.head_bytes,
        "tail_bytes": estimate.tail_bytes,
        "flash_bytes": estimate.flash_bytes,
        "limited_by": estimate.limited_by,
        "peak_op": None
        if estimate.peak_op is None
        else f"{estimate.peak_op[0]} {estimate.peak_op[1]}",
        "ops_in_model": estimate.op_count,
    }


def _parse_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """(space, config) from a genome string, JSON text or a JSON file."""
    from edgekit.export.from_path import config_part
    from edgekit.spaces import get_space, list_spaces

    part = config_part(args.model, args.model)
    if isinstance(part, dict):
        if "space" not in part:
            raise ConfigError(f"{args.model!r}: expected a config JSON object with a 'space' key")
        space = get_space(
            part["space"],
            num_classes=int(part.get("num_classes", args.num_classes)),
            in_channels=int(part.get("in_channels", args.in_channels)),
        )
        return space, space.from_dict(part)
    names = [args.space] if args.space else list_spaces()
    decoded, errors = [], []
    for name in names:
        space = get_space(name, num_classes=args.num_classes, in_channels=args.in_channels)
        try:
            decoded.append((space, space.decode(part)))
        except ConfigError as e:
            errors.append(f"{name}: {e}")
    if len(decoded) == 1:
        return decoded[0]
    if not decoded:
        raise ConfigError(
            f"{part!r} is neither a .tflite file nor a config of "
            f"{' or '.join(names)} ({'; '.join(errors)})"
        )
    raise ConfigError(f"genome {part!r} decodes in several spaces; pass --space")


def _print(figures: dict[str, Any], ops: list[dict[str, Any]] | None, verdict: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgekit.units import format_size

    table = Table(title=f"{figures['source']}  [{figures['build']}]", title_justify="left")
    table.add_column("")
    table.add_column("bytes", justify="right")
    table.add_column("")
    rows = [
        ("tensor arena", figures["arena_bytes"], format_size(figures["arena_bytes"])),
        ("  head (planned activations)", figures["head_bytes"], ""),
        ("  tail (persistent)", figures["tail_bytes"], ""),
        *((f"    {name}", size, "") for name, size in figures.get("tail_breakdown", {}).items()),
        ("flash (model)", figures["flash_bytes"], format_size(figures["flash_bytes"])),
    ]
    for label, size, human in rows:
        table.add_row(label, f"{size:,}", human)
    console.print(table)
    peak = figures.get("peak_op")
    if peak:
        tensors = escape(", ".join(figures.get("peak_tensors", [])))
        console.print(f"peak at op {peak}{': ' + tensors if tensors else ''}; "
                      f"arena limited by {figures['limited_by']}")  # fmt: skip
    if ops:
        op_table = Table(title="per operator", title_justify="left")
        with_layers = "layer" in ops[0]
        columns = ("op", "opcode", "live B", "extent B", "tail B", "tensors")
        for column in columns + (("layer",) if with_layers else ()):
            right = column not in ("opcode", "tensors", "layer")
            op_table.add_column(column, justify="right" if right else "left")
        for row in ops:
            style = "bold" if row["peak"] else None
            cells = [
                str(row["op"]), row["opcode"], f"{row['live_bytes']:,}",
                f"{row['extent_bytes']:,}", f"{row['tail_bytes']:,}", row["tensors"],
            ]  # fmt: skip
            if with_layers:
                cells.append(row["layer"] or "")
            op_table.add_row(*cells, style=style)
        console.print(op_table)
    if verdict is not None:
        colour = "green" if verdict.fits else "red"
        console.print(f"[{colour}]{verdict.summary()}[/]")
